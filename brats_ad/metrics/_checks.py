"""Input conversion and checks shared by the public metric functions (done once, at the boundary)."""

from __future__ import annotations

from typing import Any

import numpy as np

from brats_ad.errors import UndefinedMetricError

#: Accepted values of ``on_undefined`` for scalar metrics.
ON_UNDEFINED = ("raise", "nan")


def to_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` as a numpy array; torch tensors (CPU or GPU) are detached and copied to the host."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name} must be array-like; got {type(x).__name__}; pass a numpy array") from exc


def check_option(value: str, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have equal shapes; got {name_a} {a.shape} and "
            f"{name_b} {b.shape}; pass arrays of the same volume / samples"
        )


def binary_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """``labels`` as a flat bool array, or a ValueError when a value is not 0/1."""
    if labels.dtype == bool:
        return labels.reshape(-1)
    if labels.size and not (np.issubdtype(labels.dtype, np.number)):
        raise ValueError(f"{name} must be numeric or bool 0/1; got dtype {labels.dtype}")
    flat = labels.reshape(-1)
    if flat.size:
        bad = (flat != 0) & (flat != 1)
        if bad.any():
            found = np.unique(flat[bad])[:6].tolist()
            raise ValueError(
                f"{name} must be binary (0/1 or bool); got other values {found}; pass seg > 0 "
                "for whole tumour (or check that scores and labels are not swapped)"
            )
    return flat.astype(bool)


def flat_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    mask = to_numpy(mask, "mask")
    if mask.shape != shape:
        raise ValueError(
            f"mask must have the scores' shape; got mask {mask.shape} and scores {shape}; "
            "pass the brain mask of the same volume"
        )
    if mask.dtype != bool:
        mask = binary_labels(mask, "mask")
    return mask.reshape(-1)


def finite_1d(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as a flat float64 array, or a ValueError naming how many values are not finite."""
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    bad = ~np.isfinite(flat)
    if bad.any():
        raise ValueError(
            f"{name} must be finite; got {int(bad.sum())} NaN/inf values of {flat.size}; "
            "replace them (np.nan_to_num) or drop those samples"
        )
    return flat


def undefined(message: str, on_undefined: str) -> float:
    """Raise :class:`UndefinedMetricError` (default policy) or return NaN (``on_undefined='nan'``)."""
    if on_undefined == "raise":
        raise UndefinedMetricError(message + "; pass on_undefined='nan' to get NaN instead")
    return float("nan")
