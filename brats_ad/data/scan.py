"""The two records data flows through: a :class:`Case` (files on disk) and a :class:`Scan` (arrays).

Convention, stated once: images are channel-first ``(C, X, Y, Z)`` float32 in voxel order of
``affine`` (voxel index -> world millimetres); ``seg`` and ``brain_mask`` are ``(X, Y, Z)``.
Modalities use canonical names :data:`MODALITIES`; BraTS 2023+ names map onto them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np

#: Canonical modality names (BraTS 2021 spelling), in the default channel order.
MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")

#: Accepted spellings -> canonical name (BraTS 2023+ uses t1n, t1c, t2w, t2f).
MODALITY_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "t1": "t1", "t1n": "t1", "t1w": "t1",
        "t1ce": "t1ce", "t1c": "t1ce", "t1gd": "t1ce",
        "t2": "t2", "t2w": "t2",
        "flair": "flair", "t2f": "flair",
    }
)


def canonical_modality(name: str) -> str:
    """Map any accepted spelling to its canonical name, or raise a ``ConfigError``."""
    from brats_ad.errors import ConfigError

    try:
        return MODALITY_ALIASES[name.strip().lower()]
    except KeyError:
        allowed = ", ".join(sorted(MODALITY_ALIASES))
        raise ConfigError(f"unknown modality {name!r}; allowed: {allowed}") from None


@dataclass(frozen=True)
class Case:
    """One subject on disk: an image file per modality and an optional segmentation."""

    case_id: str
    images: Mapping[str, Path]  # canonical modality -> NIfTI file
    seg: Path | None = None
    dataset: str = "brats"  # the dataset plugin that found it
    naming: str = "brats2021"  # "brats2021", "brats2023" or "custom"

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.images)


@dataclass(frozen=True)
class Scan:
    """One subject in memory, as preprocessing steps receive and return it.

    Steps return a new scan (``dataclasses.replace``) and keep ``affine`` in step with any
    geometric change, so an anomaly map can always be resampled back onto the input grid.
    ``meta`` carries provenance (original shape and affine, steps applied, crop box, ...).
    """

    case_id: str
    image: "np.ndarray"  # (C, X, Y, Z) float32
    modalities: tuple[str, ...]
    affine: "np.ndarray"  # (4, 4) voxel -> world (mm)
    seg: "np.ndarray | None" = None  # (X, Y, Z) integer labels; whole tumour = seg > 0
    brain_mask: "np.ndarray | None" = None  # (X, Y, Z) bool
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape[1:])  # type: ignore[return-value]
