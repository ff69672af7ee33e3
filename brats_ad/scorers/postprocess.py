"""Post-processing of anomaly maps (Baur et al. 2021), shared by every scorer.

Baur, Denner, Wiestler, Navab, Albarqouni (2021), "Autoencoders for unsupervised anomaly
segmentation in brain MR images: a comparative study", Medical Image Analysis 69:101952,
doi:10.1016/j.media.2020.101952, post-process residual maps in three steps:

1. a median filter on the map (removes isolated salt voxels of the residual);
2. restricting the map to an *eroded* brain mask (reconstructions are poor at the brain border,
   which would otherwise light up as a rim of false positives);
3. after binarising at a threshold, dropping connected components smaller than a minimum size.

Steps 1 and 2 need no threshold, so they are a map transform, :class:`PostProcess`, that every
built-in scorer applies through its common ``postprocess`` parameter (``{"erode_brain": 0,
"median_size": 0}`` = off; the resolved value is recorded with the scorer's parameters in
results). Step 3 needs the threshold the evaluation picks later, so it is a function on binary
masks, :func:`remove_small_components`, for the evaluation step.

Everything runs on CPU with :mod:`scipy.ndimage` (batched: one call per batch, with filter sizes
of 1 on the batch and channel axes so samples never mix); tensors come back on their device.
MONAI's torch median filter unfolds a ``k**d`` neighbourhood into channels, which for a 3D
volume and ``k = 5`` needs ~125x the map's memory; scipy's needs none.
"""

from __future__ import annotations

from typing import Any, Mapping, TypeVar

import numpy as np
from scipy import ndimage

from brats_ad.errors import ConfigError, DataError

ArrayT = TypeVar("ArrayT")


def _spatial_structure(spatial_dims: int, connectivity: int, leading: int) -> np.ndarray:
    """A 3**d neighbourhood for the spatial axes, empty along ``leading`` batch/channel axes
    (scipy's ``label`` wants size 3 on every axis, so those axes keep only their centre)."""
    base = ndimage.generate_binary_structure(spatial_dims, connectivity)
    structure = np.zeros((3,) * leading + base.shape, dtype=bool)
    structure[(1,) * leading] = base
    return structure


def _to_numpy(a: Any) -> tuple[np.ndarray, Any]:
    """``(array, restore)``: a numpy view/copy and a function putting a result back in ``a``'s type."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(a, torch.Tensor):
        device, dtype = a.device, a.dtype
        array = a.detach().cpu().numpy()
        return array, lambda r: torch.as_tensor(r).to(device=device, dtype=dtype if r.dtype != bool else torch.bool)
    return np.asarray(a), lambda r: r


class PostProcess:
    """Median filter, then restriction to an eroded brain mask, on ``(B, 1, *spatial)`` maps.

    Parameters
    ----------
    erode_brain:
        binary-erosion iterations of the brain mask (face connectivity, 1 voxel per iteration);
        0 = off. Voxels outside the eroded mask get ``fill``. The edge of the array does not
        erode the mask (``border_value=1``): a slice or patch edge is not the brain's border.
    median_size:
        median filter width in every spatial axis (odd, >= 3); 0 or 1 = off. Borders replicate
        the nearest value.
    fill:
        the value of voxels outside the eroded brain: ``"min"`` (default) = the sample's own
        minimum after filtering, so a removed voxel is never above a threshold that leaves any
        voxel of its sample normal, whatever the map's range (residuals >= 0, z-scores,
        normalised FLAIR in [-1, 1]); or a number (0.0 reproduces Baur et al.'s multiplication
        of a residual map with the mask).

    Median filtering comes first (as in Baur et al.), so the filter sees the unmasked map and
    erosion does not create edges the filter would then smear. 2D and 3D alike; the number of
    spatial axes is ``map.ndim - 2``.
    """

    def __init__(self, erode_brain: int = 0, median_size: int = 0, fill: float | str = "min") -> None:
        if isinstance(erode_brain, bool) or not isinstance(erode_brain, (int, np.integer)) or erode_brain < 0:
            raise ConfigError(f"postprocess: erode_brain must be an integer >= 0 (iterations), got {erode_brain!r}")
        if isinstance(median_size, bool) or not isinstance(median_size, (int, np.integer)) or median_size < 0:
            raise ConfigError(f"postprocess: median_size must be 0 (off) or an odd integer >= 3, got {median_size!r}")
        if median_size > 1 and median_size % 2 == 0:
            raise ConfigError(
                f"postprocess: median_size must be odd so the map is not shifted, got {median_size}; "
                f"use {median_size + 1}"
            )
        if not (fill == "min" or (isinstance(fill, (int, float)) and not isinstance(fill, bool) and np.isfinite(fill))):
            raise ConfigError(f"postprocess: fill must be 'min' or a finite number, got {fill!r}")
        self.erode_brain = int(erode_brain)
        self.median_size = int(median_size) if median_size > 1 else 0
        self.fill = fill if fill == "min" else float(fill)

    @classmethod
    def from_param(cls, value: "PostProcess | Mapping[str, Any] | None", *, scorer: str = "?") -> "PostProcess":
        """Build from a scorer's ``postprocess`` parameter; unknown keys name the scorer."""
        if value is None:
            return cls()
        if isinstance(value, PostProcess):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"scorer {scorer!r}: postprocess must be a table like "
                f"{{erode_brain = 0, median_size = 0}}, got {value!r}"
            )
        unknown = sorted(set(value) - {"erode_brain", "median_size", "fill"})
        if unknown:
            raise ConfigError(
                f"scorer {scorer!r}: postprocess has no option {unknown[0]!r}; allowed: "
                "erode_brain, median_size, fill"
            )
        try:
            return cls(**value)
        except ConfigError as exc:
            raise ConfigError(f"scorer {scorer!r}: {exc}") from None

    @property
    def is_identity(self) -> bool:
        return self.erode_brain == 0 and self.median_size == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe parameters (recorded in results)."""
        return {"erode_brain": self.erode_brain, "median_size": self.median_size, "fill": self.fill}

    def eroded_mask(self, brain_mask: ArrayT) -> ArrayT:
        """The brain mask ``(B, 1, *spatial)`` eroded ``erode_brain`` times (same type back)."""
        mask, restore = _to_numpy(brain_mask)
        mask = mask.astype(bool, copy=False)
        if self.erode_brain == 0:
            return restore(mask)
        structure = _spatial_structure(mask.ndim - 2, 1, leading=2)
        return restore(ndimage.binary_erosion(mask, structure, iterations=self.erode_brain, border_value=1))

    def __call__(self, amap: ArrayT, brain_mask: Any = None) -> ArrayT:
        """Filter ``amap`` ``(B, 1, *spatial)``; ``brain_mask`` (same shape) is needed for erosion."""
        if self.is_identity:
            return amap
        array, restore = _to_numpy(amap)
        if array.ndim not in (4, 5) or array.shape[1] != 1:
            raise DataError(
                f"postprocess: expected a map of shape (B, 1, H, W) or (B, 1, H, W, D), got {array.shape}"
            )
        out = np.asarray(array, dtype=np.float32)
        if self.median_size:
            size = (1, 1) + (self.median_size,) * (out.ndim - 2)
            out = ndimage.median_filter(out, size=size, mode="nearest")
        if self.erode_brain:
            if brain_mask is None:
                raise DataError(
                    f"postprocess: erode_brain={self.erode_brain} needs ModelOutput.brain_mask but the "
                    "model output has none; let the sampler pass brain masks or set erode_brain=0"
                )
            mask, _ = _to_numpy(brain_mask)
            if mask.shape != out.shape:
                raise DataError(f"postprocess: brain mask shape {mask.shape} does not match map shape {out.shape}")
            keep = self.eroded_mask(mask.astype(bool))
            if self.fill == "min":
                fill = out.reshape(out.shape[0], -1).min(axis=1).reshape((-1,) + (1,) * (out.ndim - 1))
            else:
                fill = np.float32(self.fill)
            out = np.where(keep, out, fill).astype(np.float32, copy=False)
        return restore(out)

    def __repr__(self) -> str:
        return f"PostProcess(erode_brain={self.erode_brain}, median_size={self.median_size}, fill={self.fill!r})"


def remove_small_components(mask: ArrayT, min_size: int, *, spatial_dims: int | None = None,
                            connectivity: int = 1) -> ArrayT:
    """Drop connected components with fewer than ``min_size`` voxels from a binary mask.

    Parameters
    ----------
    mask : bool array or tensor, shape ``(*batch, *spatial)``
        a thresholded anomaly map (e.g. ``(X, Y, Z)`` for one volume, or ``(B, 1, H, W)``).
    min_size : int
        components with fewer voxels are removed; 0 or 1 keeps everything.
    spatial_dims : int, optional
        how many trailing axes are spatial (default: all of them). Leading axes are independent
        samples: components never connect across them.
    connectivity : int
        1 = faces (default; 4-/6-neighbourhood), up to ``spatial_dims`` = full (8/26).

    Returns
    -------
    The filtered mask, same type and shape, dtype bool.
    """
    array, restore = _to_numpy(mask)
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        raise DataError("remove_small_components: expected a binary mask (bool or 0/1); threshold the map first")
    array = array.astype(bool, copy=False)
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 0:
        raise ConfigError(f"remove_small_components: min_size must be an integer >= 0, got {min_size!r}")
    dims = array.ndim if spatial_dims is None else spatial_dims
    if not 1 <= dims <= array.ndim:
        raise ConfigError(f"remove_small_components: spatial_dims must be in 1..{array.ndim}, got {spatial_dims!r}")
    if not 1 <= connectivity <= dims:
        raise ConfigError(f"remove_small_components: connectivity must be in 1..{dims}, got {connectivity!r}")
    if min_size <= 1 or not array.any():
        return restore(array.copy())
    structure = _spatial_structure(dims, connectivity, leading=array.ndim - dims)
    labels, _ = ndimage.label(array, structure=structure)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False  # background
    return restore(keep[labels])
