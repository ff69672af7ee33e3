"""The one training loop every model uses, its checkpoints and the ``train`` command.

Importing this package is cheap (no torch): the submodules import torch where used.

* :func:`brats_ad.train.loop.fit` -- train a model on healthy datasets; returns the checkpoint.
* :func:`brats_ad.train.checkpoint.load_model` -- rebuild a model from a checkpoint.
* :func:`brats_ad.train.run.train_from_config` -- ``brats-ad train --config FILE``.
"""

from __future__ import annotations

from brats_ad.errors import BratsAdError


class TrainingDiverged(BratsAdError):
    """A loss became NaN or infinite; the message names the epoch, the step and the loss.

    The last good checkpoint (``last.pt`` of the previous epoch) is left untouched.
    """

    def __init__(self, message: str, *, epoch: int, step: int | str, loss: str, value: float) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.loss = loss
        self.value = value


class CheckpointError(BratsAdError):
    """A checkpoint is missing, unreadable, of another format, or does not fit the model."""


__all__ = ["CheckpointError", "TrainingDiverged"]
