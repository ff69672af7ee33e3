"""MONAI batch augmentation: shapes, dtype, reproducibility, 2D and 3D."""

from __future__ import annotations

import pytest
import torch

from brats_ad.errors import ConfigError
from brats_ad.train.augment import BatchAugment
from brats_ad.train.config import AugmentSettings

ALL_ON = AugmentSettings(enabled=True, flip_prob=1.0, affine_prob=1.0, intensity_prob=1.0, intensity_shift=0.1)


@pytest.mark.parametrize("dims", [2, 3], ids=["2d", "3d"])
def test_shapes_dtype_and_seed(dims: int) -> None:
    x = torch.rand((3, 2) + (8,) * dims)
    aug = BatchAugment(dims, ALL_ON, seed=7)
    y = aug(x)
    assert y.shape == x.shape and y.dtype == x.dtype and type(y) is torch.Tensor
    assert torch.isfinite(y).all() and not torch.equal(x, y)
    aug.set_seed(7)
    assert torch.equal(aug(x), y)
    aug.set_seed(8)
    assert not torch.equal(aug(x), y)


def test_flip_only_flips_the_chosen_axis() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    only_flip = AugmentSettings(enabled=True, flip_prob=1.0, affine_prob=0.0, intensity_prob=0.0)
    assert torch.equal(BatchAugment(2, only_flip)(x), x.flip(2))


def test_bad_axes_and_shapes() -> None:
    with pytest.raises(ConfigError, match="flip_axes .* name axis 2 but samples have 2 spatial axes"):
        BatchAugment(2, AugmentSettings(flip_axes=(2,)))
    with pytest.raises(ConfigError, match=r"expected a batch \(B, C, X, Y\), got shape \(1, 8, 8\)"):
        BatchAugment(2, ALL_ON)(torch.zeros(1, 8, 8))
