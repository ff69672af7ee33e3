from __future__ import annotations

import math

import pytest
import torch

from brats_ad.errors import ConfigError, DataError
from brats_ad.models.base import AnomalyModel
from brats_ad.models.threshold import IntensityThreshold, ThresholdConfig

ALL = ("t1", "t1ce", "t2", "flair")
dims = pytest.mark.parametrize("spatial_dims", [2, 3], ids=["2d", "3d"])


def _batch(spatial_dims: int, in_channels: int, batch: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.rand((batch, in_channels) + (8,) * spatial_dims, generator=gen) * 2 - 1


@dims
@pytest.mark.parametrize("modalities", [ALL, ("flair",)], ids=["4ch", "1ch"])
def test_map_is_the_flair_channel(spatial_dims, modalities):
    model = IntensityThreshold.from_params(spatial_dims=spatial_dims, in_channels=len(modalities),
                                           modalities=modalities)
    x = _batch(spatial_dims, len(modalities))
    out = model.eval().infer(x)
    c = modalities.index("flair")
    assert torch.equal(out.anomaly_map, x[:, c : c + 1])
    assert out.image_score.shape == (2,)
    assert out.provides() == {"anomaly_map", "image_score"}


def test_2023_names_and_channel_override():
    x = _batch(2, 4)
    model = IntensityThreshold.from_params(spatial_dims=2, modalities=["t1n", "t1c", "t2f", "t2w"])
    assert model.channel_index == 2
    assert torch.equal(model.infer(x).anomaly_map, x[:, 2:3])
    t2 = IntensityThreshold.from_params(spatial_dims=2, modalities=ALL, modality="t2w")
    assert t2.channel_index == 2
    chosen = IntensityThreshold.from_params(spatial_dims=2, modalities=ALL, channel=0)
    assert torch.equal(chosen.infer(x).anomaly_map, x[:, 0:1])


def test_missing_flair_names_the_available_modalities():
    with pytest.raises(ConfigError, match=r"modality 'flair' is not among .*\['t1', 't2'\]"):
        IntensityThreshold.from_params(spatial_dims=2, in_channels=2, modalities=("t1", "t2"))


def test_config_errors():
    with pytest.raises(ConfigError, match="got in_channels=1 but 4 modalities"):
        ThresholdConfig(spatial_dims=2, in_channels=1)
    with pytest.raises(ConfigError, match="channel 5 is out of range for 4 channels"):
        ThresholdConfig(spatial_dims=3, channel=5)
    with pytest.raises(ConfigError, match=r"top_percent must be in \(0, 100\]"):
        ThresholdConfig(spatial_dims=2, top_percent=0)
    with pytest.raises(ConfigError, match="spatial_dims must be 2 or 3"):
        ThresholdConfig(spatial_dims=4)
    model = IntensityThreshold.from_params(spatial_dims=2)
    with pytest.raises(DataError, match=r"got shape \(2, 1, 8, 8\)"):
        model.infer(_batch(2, 1))


def test_image_score_is_top_percent_mean_inside_the_brain():
    model = IntensityThreshold.from_params(spatial_dims=2, in_channels=1, modalities=("flair",),
                                           top_percent=25.0)
    x = torch.full((2, 1, 4, 4), -1.0)  # background everywhere
    x[0, 0, 0, :3] = torch.tensor([0.1, 0.5, 0.9])  # 3 brain voxels: top 25% -> ceil(0.75) = 1
    x[0, 0, 1, :3] = torch.tensor([0.2, 0.3, 0.4])  # 6 brain voxels: ceil(1.5) = 2 -> (0.9+0.5)/2
    score = model.infer(x).image_score
    assert score[0].item() == pytest.approx((0.9 + 0.5) / 2)
    assert score[1].item() == -1.0  # no brain voxel: the background value
    assert math.ceil(6 * 0.25) == 2


@dims
def test_training_free_protocol(spatial_dims):
    model = IntensityThreshold.from_params(spatial_dims=spatial_dims)
    assert isinstance(model, AnomalyModel) and isinstance(model, torch.nn.Module)
    assert model.trainable is False
    assert model.configure_optimizers() == {}
    assert model.train_step(_batch(spatial_dims, 4), {}) == {}
    val = model.validation_loss(_batch(spatial_dims, 4, batch=3))
    assert val.shape == (3,) and torch.equal(val, torch.zeros(3))
    x = _batch(spatial_dims, 4)
    assert torch.equal(model.infer(x).image_score, model.infer(x).image_score)
