"""What every step shares: the brain-mask convention, step records in ``meta`` and param checks.

The tensor convention is the one of :class:`brats_ad.data.scan.Scan`: image ``(C, X, Y, Z)``
float32, ``seg``/``brain_mask`` ``(X, Y, Z)``. Every step returns a new scan and appends one record
``{"name": step, ...}`` to ``meta["steps"]`` saying what it did.

Memory layout: the loader and the steps that allocate lay volumes out *slice-major* in memory,
``(Z, C, X, Y)`` for images and ``(Z, X, Y)`` for masks, exposed as ``(C, X, Y, Z)`` /
``(X, Y, Z)`` views (:func:`empty_slice_major`). That is the cache's layout, so writing a case
needs no transpose; steps work on :func:`memory_order` views so any layout stays fast.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from brats_ad.data.scan import Scan
from brats_ad.errors import ConfigError, DataError


def brain_mask_of(scan: Scan) -> np.ndarray:
    """The scan's brain mask, or ``any(channel != 0)`` when it has none.

    BraTS images are skull-stripped with an exact-zero background, so the non-zero voxels of
    any channel are the brain. Steps that need a mask call this one helper and store the mask
    they used (a later step may have changed the background, e.g. to -1).
    """
    if scan.brain_mask is not None:
        return np.asarray(scan.brain_mask, dtype=bool)
    return np.any(scan.image != 0, axis=0)


def empty_slice_major(shape: tuple[int, ...], dtype: Any, fill: Any = None) -> np.ndarray:
    """A ``(C, X, Y, Z)`` (or ``(X, Y, Z)``) array stored as C-contiguous ``(Z, C, X, Y)``.

    The last axis goes first in memory, so an axial slice with all its channels is one block
    (the cache layout): writing the cache is then a plain cast, no transpose.
    """
    shape = tuple(int(n) for n in shape)
    physical = (shape[-1], *shape[:-1])
    buf = np.empty(physical, dtype=dtype) if fill is None else np.full(physical, fill, dtype=dtype)
    return buf.transpose(*range(1, len(shape)), 0)


def memory_order(array: np.ndarray) -> tuple[np.ndarray, tuple[int, ...], tuple[slice, ...]]:
    """``array`` as a view with its axes in memory order and flips undone: ``(view, axes, flips)``.

    ``view`` is C-contiguous whenever ``array`` is a transposed and/or flipped view of a
    contiguous block (what the loader, orient and crop-pad produce), so flat indices work on it.
    :func:`from_memory_order` maps an array laid out like ``view`` back to ``array``'s axes.
    """
    flips = tuple(slice(None, None, -1) if s < 0 else slice(None) for s in array.strides)
    # stable sort by decreasing stride; axes of length 1 go last (their stride is arbitrary)
    axes = tuple(sorted(range(array.ndim), key=lambda a: (array.shape[a] == 1, -abs(array.strides[a]))))
    return array[flips].transpose(axes), axes, flips


def from_memory_order(array: np.ndarray, axes: tuple[int, ...], flips: tuple[slice, ...]) -> np.ndarray:
    """Inverse of :func:`memory_order`: a view of ``array`` in the original axis order."""
    return array.transpose(np.argsort(axes))[flips]


def check_scan(scan: Scan, step: str) -> None:
    """Raise a :class:`DataError` unless ``scan`` follows the (C, X, Y, Z) convention."""
    image = scan.image
    if getattr(image, "ndim", 0) != 4:
        raise DataError(
            f"case {scan.case_id!r}: step {step!r} expects an image of shape (C, X, Y, Z), got "
            f"shape {getattr(image, 'shape', None)}; add a channel axis"
        )
    spatial = tuple(image.shape[1:])
    for field_name in ("seg", "brain_mask"):
        arr = getattr(scan, field_name)
        if arr is not None and tuple(arr.shape) != spatial:
            raise DataError(
                f"case {scan.case_id!r}: step {step!r} expects {field_name} of shape {spatial} "
                f"like the image, got {tuple(arr.shape)}; load them from the same grid"
            )
    if np.asarray(scan.affine).shape != (4, 4):
        raise DataError(
            f"case {scan.case_id!r}: step {step!r} expects a 4x4 affine, got shape "
            f"{np.asarray(scan.affine).shape}; pass the NIfTI affine"
        )


def with_step(scan: Scan, step: str, record: dict[str, Any] | None = None, **changes: Any) -> Scan:
    """A copy of ``scan`` with ``changes`` applied and ``{"name": step, **record}`` logged."""
    meta = dict(scan.meta)
    meta["steps"] = [*meta.get("steps", []), {"name": step, **(record or {})}]
    return dataclasses.replace(scan, meta=meta, **changes)


def triple(value: Any, name: str, step: str, *, positive: bool = True, integer: bool = False) -> tuple:
    """Check a 3-vector parameter (a scalar is broadcast) and return it as a tuple."""
    values = [value] * 3 if np.isscalar(value) else list(value)
    if len(values) != 3:
        raise ConfigError(f"{step}: {name} must have 3 values (x, y, z), got {value!r}")
    kind = int if integer else float
    try:
        out = tuple(kind(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"{step}: {name} must be numbers, got {value!r}") from None
    if integer and any(float(v) != int(v) for v in values):
        raise ConfigError(f"{step}: {name} must be whole numbers, got {value!r}")
    if positive and any(v <= 0 for v in out):
        raise ConfigError(f"{step}: {name} must be > 0, got {value!r}")
    return out


def affine_list(affine: np.ndarray) -> list[list[float]]:
    """A JSON-safe copy of a 4x4 affine (meta must stay JSON-serialisable for the cache)."""
    return np.asarray(affine, dtype=float).tolist()


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths (mm) along each voxel axis: the norms of the affine's columns."""
    return np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)


def modality_index(scan: Scan, modality: str, step: str) -> int:
    """The channel of ``modality`` in ``scan`` or a :class:`DataError` naming what exists."""
    from brats_ad.data.scan import canonical_modality

    wanted = canonical_modality(modality)
    for i, name in enumerate(scan.modalities):
        if canonical_modality(name) == wanted:
            return i
    raise DataError(
        f"case {scan.case_id!r}: step {step!r} needs modality {modality!r}, the scan has "
        f"{', '.join(scan.modalities) or '(none)'}; load it or set the step's reference"
    )

