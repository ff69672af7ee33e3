"""Tests of the example plugin: the scorer's values by hand, and its registration."""

from __future__ import annotations

import pytest
import torch
from monai.metrics import SSIMMetric

import brats_ad_ssim.plugin as ssim_plugin
from brats_ad.errors import ConfigError
from brats_ad.models.output import ModelOutput
from brats_ad.plugins import PluginManager, load_registries
from brats_ad.registry import Source
from brats_ad.scorers.base import Score, Scorer
from brats_ad_ssim.scorer import SSIMScorer


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def spatial_dims(request):
    return request.param


def test_identical_images_score_zero(spatial_dims):
    x = torch.rand((2, 2) + (6,) * spatial_dims, generator=torch.Generator().manual_seed(0))
    score = SSIMScorer(kernel_size=3)(ModelOutput(x=x, reconstruction=x.clone()))
    assert isinstance(score, Score)
    assert score.anomaly_map.shape == (2, 1) + (6,) * spatial_dims
    torch.testing.assert_close(score.anomaly_map, torch.zeros_like(score.anomaly_map), atol=1e-5, rtol=0)
    torch.testing.assert_close(score.sample_score, torch.zeros(2), atol=1e-5, rtol=0)


def test_constant_images_give_the_luminance_term_by_hand(spatial_dims):
    # x = 0, x' = 1 everywhere: no variance, so SSIM = c1 / (1 + c1), c1 = (0.01 * data_range)^2
    x = torch.zeros((1, 1) + (5,) * spatial_dims)
    score = SSIMScorer(data_range=2.0)(ModelOutput(x=x, reconstruction=torch.ones_like(x)))
    c1 = (0.01 * 2.0) ** 2
    expected = 1.0 - c1 / (1.0 + c1)
    torch.testing.assert_close(score.anomaly_map, torch.full_like(score.anomaly_map, expected))


def test_interior_matches_monai_ssim_metric(spatial_dims):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand((1, 1) + (12,) * spatial_dims, generator=gen)
    rec = (x + 0.2 * torch.rand(x.shape, generator=gen)).clamp(0, 1)
    scorer = SSIMScorer(kernel_size=5, kernel_sigma=1.0, data_range=1.0)
    amap = scorer(ModelOutput(x=x, reconstruction=rec)).anomaly_map
    interior = amap[(0, 0) + (slice(2, -2),) * spatial_dims]  # where no padding enters the window
    reference = SSIMMetric(spatial_dims=spatial_dims, data_range=1.0, win_size=5, kernel_sigma=1.0)(rec, x)
    assert float(1.0 - interior.mean()) == pytest.approx(float(reference), abs=1e-5)


def test_a_planted_structure_lights_up_and_the_brain_mask_scores(spatial_dims):
    x = torch.zeros((1, 1) + (9,) * spatial_dims)
    rec = x.clone()
    rec[(0, 0) + (4,) * spatial_dims] = 1.0  # a structure the input does not have
    brain = torch.zeros_like(x, dtype=torch.bool)
    brain[(0, 0) + (slice(3, 6),) * spatial_dims] = True
    score = SSIMScorer(kernel_size=3)(ModelOutput(x=x, reconstruction=rec, brain_mask=brain))
    amap = score.anomaly_map
    assert amap[(0, 0) + (4,) * spatial_dims] == amap.max() > 0.5
    assert amap[(0, 0) + (0,) * spatial_dims] == 0.0
    assert float(score.sample_score) == pytest.approx(float(amap[brain].mean()))


def test_errors():
    with pytest.raises(ConfigError, match="kernel_size must be an odd integer"):
        SSIMScorer(kernel_size=4)
    with pytest.raises(ConfigError, match="scorer 'ssim' requires 'reconstruction'"):
        SSIMScorer()(ModelOutput(x=torch.zeros(1, 1, 4, 4)))


def test_hook_registers_ssim_on_a_fresh_manager():
    pm = PluginManager()
    pm.register_plugin(ssim_plugin, "ssim", Source("ssim", "brats-ad-ssim", "0.1.0"))
    pm.check_pending()
    entry = load_registries(pm).scorers.get("ssim")
    assert entry.requires == SSIMScorer.requires == {"reconstruction"}
    assert entry.source.distribution == "brats-ad-ssim"
    scorer = entry.create(kernel_size=3, postprocess={"median_size": 3})
    assert isinstance(scorer, Scorer) and scorer.postprocess.median_size == 3
