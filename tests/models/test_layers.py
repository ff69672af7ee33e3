"""N-d layer helpers and the DCGAN initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from brats_ad.models.layers import batchnorm_for, conv_for, conv_transpose_for, dcgan_init


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_helpers_pick_the_layer_of_the_dimensionality(spatial_dims):
    x = torch.zeros((2, 3) + (8,) * spatial_dims)
    assert conv_for(spatial_dims)(3, 4, 3, padding=1)(x).shape == (2, 4) + (8,) * spatial_dims
    assert conv_transpose_for(spatial_dims)(3, 4, 4, 2, 1)(x).shape == (2, 4) + (16,) * spatial_dims
    assert batchnorm_for(spatial_dims)(3)(x).shape == x.shape


@pytest.mark.parametrize("helper", [conv_for, conv_transpose_for, batchnorm_for])
@pytest.mark.parametrize("bad", [1, 4, True])
def test_helpers_reject_other_dimensionalities(helper, bad):
    with pytest.raises(ValueError, match=rf"spatial_dims must be 2 \(slices\) or 3 \(patches\), got {bad!r}"):
        helper(bad)


def test_dcgan_init_needs_apply_to_reach_leaves():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(4, 64, 4, bias=True), nn.BatchNorm3d(64))
    default = net[0].weight.clone()
    dcgan_init(net)  # on a container: nothing (the anomalib 2.7 pitfall)
    assert torch.equal(net[0].weight, default)
    net.apply(dcgan_init)
    assert net[0].weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert net[0].bias.abs().max() == 0
    assert net[1].weight.mean().item() == pytest.approx(1.0, abs=0.01)
    assert not torch.all(net[1].weight == 1) and net[1].bias.abs().max() == 0
