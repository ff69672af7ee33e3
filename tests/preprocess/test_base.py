import numpy as np
import pytest

from brats_ad.data.scan import Scan
from brats_ad.errors import DataError
from brats_ad.preprocess.base import brain_mask_of, check_scan, with_step


def _scan(image, **kw):
    return Scan("case-1", image.astype(np.float32), ("t1", "t2")[: image.shape[0]], np.eye(4), **kw)


def test_brain_mask_is_any_nonzero_channel_when_missing():
    image = np.zeros((2, 4, 4, 4))
    image[0, 1, 1, 1] = 3.0
    image[1, 2, 2, 2] = -1.0
    mask = brain_mask_of(_scan(image))
    assert mask.sum() == 2 and mask[1, 1, 1] and mask[2, 2, 2]


def test_brain_mask_prefers_the_scan_mask():
    given = np.zeros((4, 4, 4), bool)
    given[0, 0, 0] = True
    assert brain_mask_of(_scan(np.ones((1, 4, 4, 4)), brain_mask=given)).sum() == 1


def test_check_scan_names_case_and_fix():
    bad = Scan("case-9", np.zeros((4, 4, 4), np.float32), ("t1",), np.eye(4))
    with pytest.raises(DataError, match=r"case-9.*\(C, X, Y, Z\).*add a channel axis"):
        check_scan(bad, "zscore")
    with pytest.raises(DataError, match="seg of shape"):
        check_scan(_scan(np.zeros((1, 4, 4, 4)), seg=np.zeros((3, 3, 3))), "zscore")


def test_with_step_appends_record_without_touching_input():
    scan = _scan(np.zeros((1, 2, 2, 2)))
    out = with_step(with_step(scan, "a", {"x": 1}), "b")
    assert [s["name"] for s in out.meta["steps"]] == ["a", "b"] and "steps" not in scan.meta


def test_slice_major_arrays_and_memory_order_round_trip():
    from brats_ad.preprocess.base import empty_slice_major, from_memory_order, memory_order

    a = empty_slice_major((2, 5, 4, 3), np.float32, fill=1.5)
    assert a.shape == (2, 5, 4, 3) and np.all(a == 1.5)
    assert a.transpose(3, 0, 1, 2).flags.c_contiguous  # (Z, C, X, Y) in memory
    view = a[:, ::-1, :, ::-1]
    mem, axes, flips = memory_order(view)
    assert mem.flags.c_contiguous and axes == (3, 0, 1, 2)
    back = from_memory_order(mem, axes, flips)
    assert back.shape == view.shape and np.shares_memory(back, a)
    np.testing.assert_array_equal(back, view)
