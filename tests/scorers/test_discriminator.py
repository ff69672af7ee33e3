from __future__ import annotations

import pytest
import torch

from brats_ad.errors import ConfigError, DataError
from brats_ad.models.output import ModelOutput
from brats_ad.scorers.discriminator import DiscriminatorFeatures


def _output(spatial_dims: int) -> ModelOutput:
    feat = (2,) * spatial_dims
    real = torch.zeros((2, 2, *feat))
    fake = torch.zeros((2, 2, *feat))
    fake[0] = 1.0  # sample 0: every feature differs by 1
    fake[1, 0] = -2.0  # sample 1: half the features differ by 2
    return ModelOutput(x=torch.zeros((2, 1) + (4,) * spatial_dims), disc_features_real=real,
                       disc_features_fake=fake)


def test_l1_feature_residual_per_sample_as_a_constant_map(spatial_dims):
    score = DiscriminatorFeatures()(_output(spatial_dims))
    torch.testing.assert_close(score.sample_score, torch.tensor([1.0, 1.0]))
    assert score.anomaly_map.shape == (2, 1) + (4,) * spatial_dims
    assert torch.all(score.anomaly_map[1] == 1.0)


def test_power_two(spatial_dims):
    score = DiscriminatorFeatures(power=2)(_output(spatial_dims))
    torch.testing.assert_close(score.sample_score, torch.tensor([1.0, 2.0]))


def test_errors():
    with pytest.raises(ConfigError, match="power must be 1"):
        DiscriminatorFeatures(power=0)
    out = _output(2)
    out.disc_features_fake = out.disc_features_fake[:, :1]
    with pytest.raises(DataError, match="disc_features_real and disc_features_fake"):
        DiscriminatorFeatures()(out)
    with pytest.raises(ConfigError, match="scorer 'discriminator' requires 'disc_features'"):
        DiscriminatorFeatures()(ModelOutput(x=torch.zeros(1, 1, 2, 2)))
