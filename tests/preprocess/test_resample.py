import numpy as np
import pytest

from brats_ad.data.scan import Scan
from brats_ad.errors import ConfigError
from brats_ad.preprocess.base import voxel_sizes
from brats_ad.preprocess.resample import Resample


def _scan(shape, spacing):
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 2.0]
    x = np.arange(shape[0], dtype=np.float32)[:, None, None] * spacing[0]
    image = np.broadcast_to(x, shape)[None].astype(np.float32)  # value = x in mm from voxel 0
    seg = np.zeros(shape, np.uint8)
    seg[2:6, 2:6, 2:6] = 4
    return Scan("c", image, ("t1",), affine, seg=seg, brain_mask=seg > 0)


@pytest.mark.parametrize(
    "spacing, target, expected_shape",
    [((2.0, 2.0, 2.0), (1.0, 1.0, 1.0), (19, 19, 19)), ((1.0, 1.0, 3.0), (2.0, 2.0, 1.5), (5, 5, 19))],
)
def test_resample_spacing_shape_and_values(spacing, target, expected_shape):
    scan = _scan((10, 10, 10), spacing)
    out = Resample(target)(scan)
    assert out.spatial_shape == expected_shape
    assert np.allclose(voxel_sizes(out.affine), target)
    assert np.allclose(out.affine[:3, 3], scan.affine[:3, 3])  # voxel 0 stays put
    # linear image: value equals x in mm everywhere (a linear ramp is reproduced exactly)
    x_mm = np.arange(expected_shape[0]) * target[0]
    assert np.allclose(out.image[0, :, 0, 0], x_mm, atol=1e-4)
    assert set(np.unique(out.seg)) <= {0, 4} and out.brain_mask.dtype == bool
    assert out.image.dtype == np.float32


def test_resample_fast_path_returns_same_arrays():
    scan = _scan((6, 6, 6), (1.0, 1.0, 1.0005))
    out = Resample((1, 1, 1))(scan)
    assert out.image is scan.image and out.meta["steps"][-1]["changed"] is False


@pytest.mark.parametrize("bad", [(1, 1), (0, 1, 1), -2, ("a", 1, 1)])
def test_resample_rejects_bad_spacing(bad):
    with pytest.raises(ConfigError, match="spacing"):
        Resample(bad)
