"""The scorer contract: ``ModelOutput -> Score`` (a voxel-aligned map and a sample score).

Scorers are plugins (``brats_ad_register_scorers``); each declares in its registry entry what it
``requires`` from a ``ModelOutput`` (e.g. ``{"reconstruction"}``, ``{"latent_pair"}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import Tensor

    from brats_ad.models.output import ModelOutput


@dataclass
class Score:
    """A scorer's answer for one batch."""

    anomaly_map: "Tensor"  # (B, 1, *spatial) float32, voxel-aligned with ModelOutput.x
    sample_score: "Tensor"  # (B,) float32: higher means more anomalous


@runtime_checkable
class Scorer(Protocol):
    """Callable scorer. ``fit`` is optional: scorers that normalise their terms (``combined``)
    learn the statistics from HEALTHY validation outputs only, before any test data is scored."""

    #: "voxel": a map that varies per voxel; "constant": one value per sample broadcast over
    #: the sample (e.g. L_enc of a whole-slice model; stitched patch-wise for patch models).
    map_kind: str

    def __call__(self, output: "ModelOutput") -> Score: ...


def fit_if_needed(scorer: object, healthy_outputs: Iterable["ModelOutput"]) -> None:
    """Call ``scorer.fit(healthy_outputs)`` when the scorer has one (the bench and predict use this)."""
    fit = getattr(scorer, "fit", None)
    if callable(fit):
        fit(healthy_outputs)
