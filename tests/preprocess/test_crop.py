import numpy as np
import pytest

from brats_ad.data.scan import Scan
from brats_ad.errors import ConfigError
from brats_ad.preprocess.crop import CropPad
from brats_ad.preprocess.pipeline import map_to_input_grid


def _scan(shape=(20, 24, 18), box=((4, 12), (3, 20), (9, 17))):
    affine = np.array([[-1.0, 0, 0, 50], [0, 1.0, 0, -20], [0, 0, 2.0, 3], [0, 0, 0, 1]])
    image = np.zeros((2, *shape), np.float32)
    sl = tuple(slice(a, b) for a, b in box)
    rng = np.random.default_rng(1)
    image[(slice(None), *sl)] = rng.random((2, *[b - a for a, b in box])) + 0.5
    seg = np.zeros(shape, np.uint8)
    seg[box[0][0] + 1, box[1][0] + 1, box[2][0] + 1] = 3
    meta = {"original_shape": list(shape), "original_affine": affine.tolist()}
    return Scan("c", image, ("t1", "t2"), affine, seg=seg, meta=meta)


@pytest.mark.parametrize("shape", [(16, 16, 16), (6, 10, 30), (40, 8, 12)], ids=["pad-some", "crop-some", "mixed"])
def test_crop_pad_shape_world_coordinates_and_round_trip(shape):
    scan = _scan()
    out = CropPad(shape=shape, margin=2, pad_value="background")(scan)
    assert out.spatial_shape == shape and out.seg.shape == shape and out.brain_mask.shape == shape
    record = out.meta["steps"][-1]
    start = np.array(record["start"])
    # output voxel i is input voxel i + start: same world position through the new affine
    assert np.allclose(out.affine @ [0, 0, 0, 1], scan.affine @ [*start, 1])
    # the brain box is centred in the window
    box = np.array(record["brain_box"])
    centre_in_out = (box[0] + box[1]) / 2 - start
    assert np.all(np.abs(centre_in_out - np.array(shape) / 2) <= 2.5)
    back = map_to_input_grid(out.image[0], {**out.meta, "processed_affine": out.affine.tolist()}, order=0, fill=-7)
    assert back.shape == scan.spatial_shape
    inside = back != -7
    assert np.array_equal(back[inside], scan.image[0][inside])  # exact where the window covers


def test_crop_pad_pads_with_background_value():
    scan = _scan()
    image = np.where(scan.image == 0, -1.0, scan.image).astype(np.float32)  # like percentile-scale
    brain = scan.image[0] != 0
    out = CropPad(shape=(40, 40, 40))(Scan("c", image, scan.modalities, scan.affine, brain_mask=brain))
    assert np.all(out.image[:, 0, 0, 0] == -1.0) and out.meta["steps"][-1]["pad_value"] == [-1.0, -1.0]
    assert out.brain_mask.sum() == brain.sum()


def test_crop_only_when_shape_is_none():
    out = CropPad(shape=None, margin=1)(_scan())
    assert out.spatial_shape == (10, 19, 10)


@pytest.mark.parametrize("kwargs, match", [({"shape": (1, 2)}, "shape"), ({"margin": -1}, "margin"),
                                          ({"pad_value": "mean"}, "pad_value")])
def test_crop_pad_rejects_bad_params(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CropPad(**kwargs)


def test_crop_pad_output_is_slice_major_and_layout_independent():
    scan = _scan()
    expected = CropPad(shape=(16, 16, 16), margin=2)(scan)
    assert expected.image.transpose(3, 0, 1, 2).flags.c_contiguous  # the cache's (Z, C, X, Y)
    for image in (np.asfortranarray(scan.image), scan.image[:, ::-1][:, ::-1]):
        out = CropPad(shape=(16, 16, 16), margin=2)(Scan("c", image, scan.modalities, scan.affine, seg=scan.seg))
        np.testing.assert_array_equal(out.image, expected.image)
        np.testing.assert_array_equal(out.seg, expected.seg)
        assert out.meta["steps"][-1] == expected.meta["steps"][-1]
