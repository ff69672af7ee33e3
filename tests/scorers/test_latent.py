from __future__ import annotations

import pytest
import torch

from brats_ad.errors import ConfigError
from brats_ad.models.output import ModelOutput
from brats_ad.scorers.latent import Latent


def test_latent_error_is_the_mean_squared_difference_broadcast(spatial_dims):
    x = torch.zeros((2, 1) + (3,) * spatial_dims)
    whole = (1,) * spatial_dims
    z = torch.tensor([[1.0, 2.0], [0.0, 0.0]]).view(2, 2, *whole)
    z_out = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).view(2, 2, *whole)
    score = Latent()(ModelOutput(x=x, latent_in=z, latent_out=z_out))
    torch.testing.assert_close(score.sample_score, torch.tensor([2.0, 1.0]))  # (0+4)/2, (1+1)/2
    assert score.anomaly_map.shape == (2, 1) + (3,) * spatial_dims
    assert torch.all(score.anomaly_map[0] == 2.0) and torch.all(score.anomaly_map[1] == 1.0)
    assert Latent.map_kind == "constant"


def test_matches_ganomaly_image_score_definition():
    z, z_out = torch.randn(3, 5, 2, 2), torch.randn(3, 5, 2, 2)
    out = ModelOutput(x=torch.zeros(3, 1, 4, 4), latent_in=z, latent_out=z_out)
    torch.testing.assert_close(Latent()(out).sample_score, (z - z_out).pow(2).flatten(1).mean(1))


def test_missing_latent_pair_is_named():
    out = ModelOutput(x=torch.zeros(1, 1, 2, 2), latent_in=torch.zeros(1, 2, 1, 1))
    with pytest.raises(ConfigError, match=r"scorer 'latent' requires 'latent_pair' \(ModelOutput.latent_in"):
        Latent()(out)


def test_erosion_leaves_a_constant_map_and_its_score_unchanged():
    out = ModelOutput(x=torch.zeros(1, 1, 5, 5), latent_in=torch.ones(1, 2, 1, 1),
                      latent_out=torch.zeros(1, 2, 1, 1), brain_mask=torch.ones(1, 1, 5, 5, dtype=torch.bool))
    score = Latent(postprocess={"erode_brain": 1, "median_size": 3})(out)
    assert torch.all(score.anomaly_map == 1.0) and float(score.sample_score) == 1.0
