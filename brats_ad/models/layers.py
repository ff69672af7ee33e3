"""N-dimensional layer helpers: one model definition serves 2D slices and 3D patches.

Every model picks its layers through these checked helpers (MONAI style), so a wrong
``spatial_dims`` fails once, here, with one message.
"""

from __future__ import annotations

from torch import nn

__all__ = ["batchnorm_for", "conv_for", "conv_transpose_for", "dcgan_init", "check_spatial_dims"]


def check_spatial_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` if it is 2 or 3, else raise a ``ValueError`` naming both sides."""
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise ValueError(
            f"spatial_dims must be 2 (slices) or 3 (patches), got {spatial_dims!r}"
        )
    return int(spatial_dims)


def conv_for(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return {2: nn.Conv2d, 3: nn.Conv3d}[check_spatial_dims(spatial_dims)]


def conv_transpose_for(spatial_dims: int) -> type[nn.Module]:
    """``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d``."""
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[check_spatial_dims(spatial_dims)]


def batchnorm_for(spatial_dims: int) -> type[nn.Module]:
    """``nn.BatchNorm2d`` or ``nn.BatchNorm3d``."""
    return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[check_spatial_dims(spatial_dims)]


def dcgan_init(module: nn.Module, std: float = 0.02) -> None:
    """DCGAN initialisation (Radford et al. 2016) of ONE module; use ``net.apply(dcgan_init)``.

    Convolutions (plain and transposed, any dimensionality): weight ~ N(0, std), bias 0.
    Batch norms: weight ~ N(1, std), bias 0. Other modules are left alone.

    ``nn.Module.apply`` visits every leaf; calling this on a container does nothing, which is
    how anomalib 2.7 ends up never initialising its GANomaly (it calls its init on the
    generator and discriminator containers only).
    """
    if isinstance(module, nn.modules.conv._ConvNd):
        nn.init.normal_(module.weight, 0.0, std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.weight is not None:
            nn.init.normal_(module.weight, 1.0, std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
