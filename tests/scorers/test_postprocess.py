from __future__ import annotations

import numpy as np
import pytest
import torch

from brats_ad.errors import ConfigError, DataError
from brats_ad.models.output import ModelOutput
from brats_ad.scorers.postprocess import PostProcess, remove_small_components
from brats_ad.scorers.residual import Residual


def test_median_removes_a_salt_voxel_per_sample(spatial_dims):
    amap = torch.zeros((2, 1) + (5,) * spatial_dims)
    amap[(0, 0) + (2,) * spatial_dims] = 9.0  # salt in sample 0
    amap[1] = 1.0  # a constant sample 1 must stay 1 (samples never mix)
    out = PostProcess(median_size=3)(amap)
    assert torch.all(out[0] == 0.0) and torch.all(out[1] == 1.0)
    assert out.dtype == amap.dtype and out.shape == amap.shape


def test_median_keeps_a_blob_larger_than_the_kernel():
    amap = torch.zeros(1, 1, 7, 7)
    amap[0, 0, 1:6, 1:6] = 1.0
    out = PostProcess(median_size=3)(amap)
    assert out[0, 0, 3, 3] == 1.0 and out.sum() == 21.0  # the 5x5 square loses its 4 corners


def test_erosion_shrinks_the_brain_and_fills_with_the_sample_minimum(spatial_dims):
    amap = torch.full((1, 1) + (5,) * spatial_dims, 5.0)
    amap[(0, 0) + (0,) * spatial_dims] = -1.0  # the sample minimum, outside the brain
    brain = torch.zeros_like(amap, dtype=torch.bool)
    brain[(0, 0) + (slice(1, 4),) * spatial_dims] = True  # a 3^d cube
    post = PostProcess(erode_brain=1)
    eroded = post.eroded_mask(brain)
    assert int(eroded.sum()) == 1 and eroded[(0, 0) + (2,) * spatial_dims]  # only the centre survives
    out = post(amap, brain)
    assert out[(0, 0) + (2,) * spatial_dims] == 5.0
    assert int((out == -1.0).sum()) == 5**spatial_dims - 1


def test_erosion_ignores_the_array_edge():
    brain = np.ones((1, 1, 4, 4), dtype=bool)  # a brain that fills a patch: the patch edge is no border
    assert PostProcess(erode_brain=2).eroded_mask(brain).all()


def test_numeric_fill_and_median_before_erosion():
    amap = torch.zeros(1, 1, 5, 5)
    amap[0, 0, 2, 2] = 4.0  # salt, removed by the median before masking
    brain = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    brain[0, 0, 0] = False
    out = PostProcess(erode_brain=1, median_size=3, fill=-7.0)(amap, brain)
    assert torch.all(out[0, 0, :2] == -7.0) and torch.all(out[0, 0, 2:] == 0.0)


def test_scorer_applies_postprocess_and_scores_the_filtered_map():
    x = torch.zeros(1, 1, 5, 5)
    rec = torch.zeros(1, 1, 5, 5)
    rec[0, 0, 2, 2] = 5.0
    out = ModelOutput(x=x, reconstruction=rec)
    assert float(Residual()(out).sample_score) == pytest.approx(5.0 / 25)
    score = Residual(postprocess={"median_size": 3})(out)
    assert torch.all(score.anomaly_map == 0.0) and float(score.sample_score) == 0.0


def test_off_is_the_identity_and_params_are_recorded():
    amap = torch.rand(1, 1, 3, 3)
    post = PostProcess.from_param({"erode_brain": 0, "median_size": 0})
    assert post.is_identity and post(amap) is amap
    assert PostProcess.from_param({"median_size": 5}).to_dict() == {"erode_brain": 0, "median_size": 5, "fill": "min"}


@pytest.mark.parametrize(
    "kwargs, match",
    [({"median_size": 4}, "must be odd"), ({"erode_brain": -1}, "erode_brain must be"),
     ({"fill": "max"}, "fill must be"), ({"median_size": 2.5}, "median_size must be")],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PostProcess(**kwargs)


def test_erosion_without_a_brain_mask_is_an_error():
    with pytest.raises(DataError, match="erode_brain=1 needs ModelOutput.brain_mask"):
        PostProcess(erode_brain=1)(torch.zeros(1, 1, 3, 3))


def test_small_components_are_removed(spatial_dims):
    mask = np.zeros((6,) * spatial_dims, dtype=bool)
    mask[(slice(0, 2),) * spatial_dims] = True  # 2^d voxels
    mask[(5,) * spatial_dims] = True  # a lone voxel
    out = remove_small_components(mask, min_size=2)
    assert out.sum() == 2**spatial_dims and not out[(5,) * spatial_dims]
    assert remove_small_components(mask, min_size=2**spatial_dims + 1).sum() == 0
    assert remove_small_components(mask, min_size=0).sum() == mask.sum()


def test_components_do_not_connect_across_the_batch_and_diagonals_need_full_connectivity():
    mask = torch.zeros(2, 1, 3, 3, dtype=torch.bool)
    mask[:, 0, 1, 1] = True  # one voxel per sample: neighbours along the batch axis
    assert not remove_small_components(mask, 2, spatial_dims=2).any()
    diagonal = np.eye(3, dtype=bool)
    assert not remove_small_components(diagonal, 2).any()  # faces only: three singletons
    assert remove_small_components(diagonal, 2, connectivity=2).sum() == 3
    assert isinstance(remove_small_components(mask, 2, spatial_dims=2), torch.Tensor)


def test_non_binary_masks_are_refused():
    with pytest.raises(DataError, match="expected a binary mask"):
        remove_small_components(np.array([0.0, 0.5]), 2)
