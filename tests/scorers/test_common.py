from __future__ import annotations

import pytest
import torch

from brats_ad.errors import ConfigError, DataError
from brats_ad.models.output import ModelOutput
from brats_ad.scorers.common import brain_region, broadcast, masked_mean, require, topk_mean


def test_require_names_scorer_capability_fields_and_what_arrived():
    out = ModelOutput(x=torch.zeros(1, 1, 2, 2), reconstruction=torch.zeros(1, 1, 2, 2))
    require(out, "residual", {"reconstruction"})
    with pytest.raises(ConfigError) as info:
        require(out, "discriminator", {"disc_features"})
    message = str(info.value)
    assert "scorer 'discriminator' requires 'disc_features'" in message
    assert "ModelOutput.disc_features_real" in message and "provides only ['reconstruction']" in message
    assert "\n" not in message


def test_brain_region_and_reductions_by_hand():
    amap = torch.tensor([[[[1.0, 2.0], [3.0, 10.0]]], [[[4.0, 4.0], [4.0, 8.0]]]])
    mask = torch.tensor([[[[True, True], [True, False]]], [[[False, False], [False, False]]]])
    out = ModelOutput(x=torch.zeros(2, 1, 2, 2), brain_mask=mask)
    region = brain_region(out)
    assert region[1].all() and not region[0, 0, 1, 1]  # an empty mask falls back to all voxels
    torch.testing.assert_close(masked_mean(amap, region), torch.tensor([2.0, 5.0]))
    torch.testing.assert_close(topk_mean(amap, region, 50.0), torch.tensor([2.5, 6.0]))  # ceil(1.5)=2, 2 of 4
    assert broadcast(torch.tensor([1.0, 2.0]), torch.zeros(2, 3, 4, 5, 6)).shape == (2, 1, 4, 5, 6)


def test_brain_mask_of_the_wrong_shape_is_an_error():
    from brats_ad.scorers.residual import Residual

    out = ModelOutput(x=torch.zeros(1, 1, 2, 2), reconstruction=torch.zeros(1, 1, 2, 2),
                      brain_mask=torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(DataError, match="expected brain_mask of shape \\(1, 1, 2, 2\\)"):
        Residual()(out)
