"""Random training augmentation for batches ``(B, C, *spatial)``, 2D and 3D, from MONAI.

MONAI's array transforms work on one channel-first sample, so each sample of the batch is
transformed on its own (with its own random draw) on the batch's device. The random state is
reseeded per epoch by the loop, so augmented runs stay reproducible and resumable.
"""

from __future__ import annotations

import math

import torch
from monai.transforms import Compose, RandAdjustContrast, RandAffine, RandFlip, RandScaleIntensity, RandShiftIntensity

from brats_ad.errors import ConfigError
from brats_ad.train.config import AugmentSettings


class BatchAugment:
    """Apply flips, small rotations / zooms and intensity changes to every sample of a batch."""

    def __init__(self, spatial_dims: int, settings: AugmentSettings, seed: int = 0) -> None:
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        bad_axes = [a for a in settings.flip_axes if a >= spatial_dims]
        if bad_axes:
            raise ConfigError(
                f"augmentation.flip_axes {list(settings.flip_axes)} name axis {bad_axes[0]} but "
                f"samples have {spatial_dims} spatial axes; use axes below {spatial_dims}"
            )
        self.spatial_dims = spatial_dims
        self.settings = settings
        s = settings
        steps = []
        for axis in s.flip_axes:
            if s.flip_prob > 0:
                steps.append(RandFlip(prob=s.flip_prob, spatial_axis=axis))
        if s.affine_prob > 0 and (s.rotate_deg > 0 or s.scale > 0):
            rot = math.radians(s.rotate_deg)
            # 2D: one in-plane angle; 3D: one angle per axis
            rotate_range = (rot,) if spatial_dims == 2 else (rot, rot, rot)
            steps.append(
                RandAffine(
                    prob=s.affine_prob,
                    rotate_range=rotate_range,
                    scale_range=(s.scale,) * spatial_dims,
                    mode="bilinear",
                    padding_mode="border",  # background stays background (images are -1 there)
                )
            )
        if s.intensity_prob > 0:
            if s.intensity_scale > 0:
                steps.append(RandScaleIntensity(factors=s.intensity_scale, prob=s.intensity_prob))
            if s.intensity_shift > 0:
                steps.append(RandShiftIntensity(offsets=s.intensity_shift, prob=s.intensity_prob))
            if s.contrast_gamma != (1.0, 1.0):
                steps.append(RandAdjustContrast(prob=s.intensity_prob, gamma=s.contrast_gamma, retain_stats=True))
        self._transform = Compose(steps)
        self.set_seed(seed)

    def set_seed(self, seed: int) -> None:
        """Reseed every random transform (the loop calls this once per epoch)."""
        self._transform.set_random_state(seed=int(seed) % (2**32))

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> same shape, dtype and device."""
        if batch.ndim != self.spatial_dims + 2:
            raise ConfigError(
                f"augmentation expected a batch (B, C, {', '.join('XYZ'[: self.spatial_dims])}), got shape "
                f"{tuple(batch.shape)}; set data.dims to match the samples"
            )
        out = [torch.as_tensor(self._transform(sample)) for sample in batch]
        result = torch.stack([t.as_tensor() if hasattr(t, "as_tensor") else t for t in out])
        return result.to(dtype=batch.dtype, device=batch.device)
