"""Convert between (X, Y, Z) arrays with a RAS affine and SimpleITK images (LPS physical space).

SimpleITK stores arrays z-first and uses LPS world coordinates; nibabel uses RAS. These helpers
are the only place that knows, so registration code works in one convention.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def to_sitk(volume: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A float32 SimpleITK image of ``volume`` (X, Y, Z) placed by the RAS ``affine``."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(volume, dtype=np.float32).transpose(2, 1, 0)))
    affine = np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    img.SetSpacing(spacing.tolist())
    img.SetDirection((_RAS_TO_LPS @ (affine[:3, :3] / spacing)).ravel().tolist())
    img.SetOrigin((_RAS_TO_LPS @ affine[:3, 3]).tolist())
    return img


def from_sitk(img: sitk.Image) -> np.ndarray:
    """The (X, Y, Z) array of a SimpleITK image."""
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0)


def affine_of(img: sitk.Image) -> np.ndarray:
    """The RAS voxel-to-world affine of a SimpleITK image."""
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _RAS_TO_LPS @ direction @ np.diag(img.GetSpacing())
    affine[:3, 3] = _RAS_TO_LPS @ np.asarray(img.GetOrigin(), dtype=float)
    return affine


def reference_grid(shape: tuple[int, int, int], affine: np.ndarray) -> sitk.Image:
    """An empty image defining an output grid for :func:`sitk.Resample`."""
    img = sitk.Image([int(s) for s in shape], sitk.sitkUInt8)
    ref = to_sitk(np.zeros((1, 1, 1), np.float32), affine)
    img.SetSpacing(ref.GetSpacing())
    img.SetDirection(ref.GetDirection())
    img.SetOrigin(ref.GetOrigin())
    return img


def resample_array(
    volume: np.ndarray,
    affine: np.ndarray,
    grid: sitk.Image,
    transform: sitk.Transform,
    *,
    nearest: bool = False,
    default: float = 0.0,
) -> np.ndarray:
    """Resample ``volume`` onto ``grid``; ``transform`` maps grid points to ``volume`` points."""
    moving = to_sitk(volume, affine)
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    out = sitk.Resample(moving, grid, transform, interp, float(default), sitk.sitkFloat32)
    return from_sitk(out)


def shrink_to(img: sitk.Image, spacing_mm: float) -> sitk.Image:
    """Smooth and resample ``img`` to about ``spacing_mm`` voxels (speed for registration)."""
    factors = [max(1, int(round(spacing_mm / s))) for s in img.GetSpacing()]
    if all(f == 1 for f in factors):
        return img
    sigma = [0.5 * f * s for f, s in zip(factors, img.GetSpacing())]
    return sitk.Shrink(sitk.SmoothingRecursiveGaussian(img, sigma), factors)
