from __future__ import annotations

import pytest
import torch

from brats_ad.errors import ConfigError, DataError
from brats_ad.models.output import ModelOutput
from brats_ad.scorers.residual import Residual


def _output(spatial_dims: int, brain: bool = True) -> ModelOutput:
    """Two channels; x = 0 everywhere, x' = 1 (channel 0) and 3 (channel 1) at one voxel."""
    shape = (1, 2) + (2,) * spatial_dims
    x = torch.zeros(shape)
    rec = torch.zeros(shape)
    first = (0, 0) + (0,) * spatial_dims
    rec[first] = 1.0
    rec[(0, 1) + (0,) * spatial_dims] = 3.0
    mask = None
    if brain:
        mask = torch.zeros((1, 1) + (2,) * spatial_dims, dtype=torch.bool)
        mask[(0, 0, 0)] = True  # half of the voxels: the first row/slab, incl. the error voxel
    return ModelOutput(x=x, reconstruction=rec, brain_mask=mask)


def test_l1_map_is_the_channel_mean_and_score_the_brain_mean(spatial_dims):
    out = _output(spatial_dims)
    score = Residual()(out)
    n_brain = 2 ** (spatial_dims - 1)
    expected = torch.zeros((1, 1) + (2,) * spatial_dims)
    expected[(0, 0) + (0,) * spatial_dims] = (1.0 + 3.0) / 2
    torch.testing.assert_close(score.anomaly_map, expected)
    torch.testing.assert_close(score.sample_score, torch.tensor([2.0 / n_brain]))
    assert score.anomaly_map.dtype == torch.float32 and score.sample_score.shape == (1,)


def test_power_two_and_channel_selection(spatial_dims):
    out = _output(spatial_dims, brain=False)
    corner = (0, 0) + (0,) * spatial_dims
    assert Residual(power=2)(out).anomaly_map[corner] == pytest.approx((1.0 + 9.0) / 2)
    assert Residual(channels=[1])(out).anomaly_map[corner] == pytest.approx(3.0)
    assert Residual(power=2, channels=[0, 1])(out).anomaly_map[corner] == pytest.approx(5.0)
    # no brain mask: the score averages every voxel
    assert float(Residual(channels=[1])(out).sample_score) == pytest.approx(3.0 / 2**spatial_dims)


def test_top_percent_scores_the_brightest_brain_voxels(spatial_dims):
    out = _output(spatial_dims)
    assert float(Residual(top_percent=1.0)(out).sample_score) == pytest.approx(2.0)


def test_empty_brain_falls_back_to_all_voxels():
    out = _output(2)
    out.brain_mask[:] = False
    assert float(Residual()(out).sample_score) == pytest.approx(2.0 / 4)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"power": 3}, "power must be 1"), ({"channels": []}, "channels must be null"),
     ({"channels": [0, 0]}, "channels must be null"), ({"top_percent": 0}, "top_percent"),
     ({"postprocess": {"median": 3}}, "no option 'median'")],
)
def test_bad_params_are_rejected_in_init(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Residual(**kwargs)


def test_channel_out_of_range_names_the_channel_count():
    with pytest.raises(DataError, match="input has 2 channel"):
        Residual(channels=[2])(_output(2))


def test_misaligned_reconstruction_is_an_error():
    out = _output(2)
    out.reconstruction = out.reconstruction[..., :1]
    with pytest.raises(DataError, match="x and reconstruction must have the same shape"):
        Residual()(out)


def test_missing_reconstruction_names_scorer_and_capability():
    out = ModelOutput(x=torch.zeros(1, 1, 2, 2), anomaly_map=torch.zeros(1, 1, 2, 2))
    with pytest.raises(ConfigError, match="scorer 'residual' requires 'reconstruction'"):
        Residual()(out)
