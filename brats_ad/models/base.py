"""The interface the one training loop drives; every model plugin implements it.

Models own their losses and optimisers (a GAN has two), the loop owns everything else: device,
mixed precision, seeding, logging, checkpoints, early stopping and NaN checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from torch import Tensor

    from brats_ad.models.output import ModelOutput


@runtime_checkable
class AnomalyModel(Protocol):
    """A trainable (or training-free) anomaly detector; also a ``torch.nn.Module``."""

    #: frozen dataclass with ``spatial_dims`` first; saved in checkpoints (JSON-safe via ``asdict``)
    config: Any
    #: False for training-free baselines (the FLAIR threshold): the loop skips training
    trainable: bool

    def configure_optimizers(self) -> Mapping[str, "torch.optim.Optimizer"]:
        """Named optimisers (e.g. ``{"generator": ..., "discriminator": ...}``)."""

    def train_step(self, x: "Tensor", optimizers: Mapping[str, "torch.optim.Optimizer"]) -> Mapping[str, float]:
        """One optimisation step on a healthy batch ``(B, C, *spatial)``; returns named losses.

        Runs inside the loop's autocast context; it must call ``backward``/``step`` itself.
        """

    def validation_loss(self, x: "Tensor") -> "Tensor":
        """Per-sample loss ``(B,)`` on HEALTHY validation data: the only signal for early
        stopping and model selection (never test labels)."""

    def infer(self, x: "Tensor") -> "ModelOutput":
        """Eval-mode inference for a batch; returns the common :class:`ModelOutput`."""
