"""The common output every model returns and every scorer reads (see ``shared/DESIGN.md``).

Tensors keep batch and spatial axes, 2D or 3D alike: images are ``(B, C, *spatial)``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import Tensor

#: The capabilities a model can ``provide`` and a scorer can ``require``.
CAPABILITIES: dict[str, tuple[str, ...]] = {
    "reconstruction": ("reconstruction",),
    "latent_pair": ("latent_in", "latent_out"),
    "disc_features": ("disc_features_real", "disc_features_fake"),
    "image_score": ("image_score",),
    "anomaly_map": ("anomaly_map",),
}


@dataclass
class ModelOutput:
    """What a model infers for a batch ``x``; fields a model cannot produce stay ``None``."""

    x: "Tensor"  # (B, C, *spatial) the input as the model saw it
    reconstruction: "Tensor | None" = None  # (B, C, *spatial) x' = G(x)
    latent_in: "Tensor | None" = None  # (B, L, *s) z = G_E(x); s = 1s for whole-image models
    latent_out: "Tensor | None" = None  # (B, L, *s) z' = E(x')
    disc_features_real: "Tensor | None" = None  # (B, F, ...) D's features of x
    disc_features_fake: "Tensor | None" = None  # (B, F, ...) D's features of x'
    image_score: "Tensor | None" = None  # (B,) the model's own sample score
    anomaly_map: "Tensor | None" = None  # (B, 1, *spatial) a map the model computes directly
    brain_mask: "Tensor | None" = None  # (B, 1, *spatial) bool

    def provides(self) -> frozenset[str]:
        """The capabilities whose fields are all present."""
        present = {f.name for f in fields(self) if getattr(self, f.name) is not None}
        return frozenset(cap for cap, names in CAPABILITIES.items() if set(names) <= present)
