import numpy as np
import pytest
from nibabel.orientations import aff2axcodes

from brats_ad.data.scan import Scan
from brats_ad.errors import ConfigError
from brats_ad.preprocess.orient import Orient

AFFINES = {
    "RAS": np.diag([1.0, 1.0, 1.0, 1.0]),
    "LPS": np.array([[-1.0, 0, 0, 30], [0, -2.0, 0, 40], [0, 0, 3.0, -5], [0, 0, 0, 1]]),
    "LAS": np.array([[-1.5, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]),
    "permuted-PSL": np.array([[0, 0, -1.0, 7], [-1.0, 0, 0, 3], [0, 2.0, 0, 1], [0, 0, 0, 1]]),
}


@pytest.mark.parametrize("affine", AFFINES.values(), ids=AFFINES.keys())
def test_orient_keeps_world_coordinates_of_a_marked_voxel(affine):
    shape = (5, 6, 7)
    image = np.zeros((2, *shape), np.float32)
    voxel = (1, 4, 2)
    image[:, voxel[0], voxel[1], voxel[2]] = [5.0, 7.0]
    seg = np.zeros(shape, np.uint8)
    seg[voxel] = 2
    world = affine @ [*voxel, 1]
    out = Orient()(Scan("c", image, ("t1", "t2"), affine, seg=seg))
    assert "".join(aff2axcodes(out.affine)) == "RAS"
    new_voxel = np.argwhere(out.image[0] == 5.0)[0]
    assert np.allclose(out.affine @ [*new_voxel, 1], world)
    assert out.image[1][tuple(new_voxel)] == 7.0 and out.seg[tuple(new_voxel)] == 2
    assert sorted(out.spatial_shape) == sorted(shape)
    assert out.meta["steps"][-1]["name"] == "orient"


def test_orient_is_a_no_op_on_ras():
    image = np.random.default_rng(0).random((1, 3, 3, 3)).astype(np.float32)
    out = Orient()(Scan("c", image, ("t1",), np.eye(4)))
    assert out.image is image and out.meta["steps"][-1]["changed"] is False


@pytest.mark.parametrize("codes", ["RAX", "RRS", "RA"])
def test_orient_rejects_bad_axcodes(codes):
    with pytest.raises(ConfigError, match="axcodes"):
        Orient(codes)
