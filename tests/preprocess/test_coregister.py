"""Rigid MI co-registration: a modality moved against the reference is realigned (needs ../shared)."""

from pathlib import Path

import numpy as np
import pytest

from brats_ad.data.scan import Scan
from brats_ad.errors import ConfigError, DataError
from brats_ad.preprocess.coregister import Coregister

ATLAS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "brats_space_atlas"


@pytest.fixture(scope="module")
def two_contrasts():
    """A 2 mm real head as 't1' and an inverted-contrast copy as 't2', moved by 7 deg / 7 mm."""
    import nibabel as nib
    import SimpleITK as sitk

    from brats_ad.preprocess import _sitk

    path = ATLAS / "t1_brats_space.nii.gz"
    if not path.is_file():
        pytest.skip(f"atlas not found at {ATLAS} (../shared/data)")
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(nib.load(str(path)).dataobj)[..., 0], nib.load(str(path)).affine))
    t1 = np.asarray(img.dataobj, dtype=np.float32)[::2, ::2, ::2]
    affine = img.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    head = t1 > np.percentile(t1, 40)
    t2 = np.where(head, t1.max() - t1, 0).astype(np.float32)  # a different contrast: MI, not SSD
    move = sitk.Euler3DTransform()
    centre = affine @ [60, 60, 39, 1]
    move.SetCenter([-centre[0], -centre[1], centre[2]])
    move.SetRotation(*np.deg2rad([7.0, 0.0, -5.0]))
    move.SetTranslation((6.0, 4.0, -4.0))
    moved = _sitk.resample_array(t2, affine, _sitk.reference_grid(t2.shape, affine), move)
    return t1, t2, moved, affine, head


def _mean_abs_error(a, b, mask):
    return float(np.abs(a - b)[mask].mean())


@pytest.mark.slow
def test_coregister_realigns_a_moved_modality(two_contrasts):
    t1, t2, moved, affine, head = two_contrasts
    scan = Scan("atlas-2mm", np.stack([t1, moved]), ("t1", "t2"), affine)
    out = Coregister(shrink=(2, 1), iterations=60, sampling=0.05)(scan)
    before = _mean_abs_error(moved, t2, head)
    after = _mean_abs_error(out.image[1], t2, head)
    print(f"coregister mean |t2 - truth| in head: before {before:.1f}, after {after:.1f}")
    assert after < 0.35 * before
    assert np.array_equal(out.image[0], t1)  # the reference is not touched
    record = out.meta["steps"][-1]
    assert record["reference"] == "t1" and set(record["transforms"]) == {"t2"}
    again = Coregister(shrink=(2, 1), iterations=60, sampling=0.05)(scan)
    # fixed seed, one thread: reproducible up to floating-point rounding
    assert np.allclose(again.image, out.image, atol=1e-3 * float(t2.max()))


def test_coregister_needs_the_reference_modality():
    scan = Scan("c", np.ones((1, 4, 4, 4), np.float32), ("flair",), np.eye(4))
    with pytest.raises(DataError, match="needs modality 't1'.*flair"):
        Coregister()(scan)


@pytest.mark.parametrize("kwargs, match", [({"sampling": 0}, "sampling"), ({"shrink": []}, "shrink"),
                                          ({"iterations": 0}, "iterations")])
def test_coregister_rejects_bad_params(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Coregister(**kwargs)
