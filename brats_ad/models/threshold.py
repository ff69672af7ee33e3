"""The FLAIR-threshold baseline: the intensity of one modality *is* the anomaly map.

Meissen et al. (2021, "Challenging current semi-supervised anomaly segmentation methods for
brain MRI", BrainLes/MICCAI, doi:10.1007/978-3-031-08999-2_5) showed that thresholding the
normalised FLAIR intensity beats most autoencoders on BraTS, because tumours are hyperintense
in FLAIR. Any benchmark that omits it overstates what the learned models add.

No training: the data pipeline already normalised each scan (default ``median-scale``: each
channel relative to its brain median, background -1), so the map is the chosen channel
unchanged. One threshold serves every volume only if that normalisation does not depend on the
tumour; see :mod:`brats_ad.preprocess.intensity` for why the default is the median. Voxel
AUROC/AUPRC and thresholded Dice depend only on the order of values, so no further rescaling
is needed.

Image score: the mean of the top ``top_percent`` % map values inside the brain (voxels above
``background``), i.e. "how bright are the brightest brain voxels"; a sample with no brain voxel
scores ``background``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from brats_ad.data.scan import canonical_modality
from brats_ad.errors import ConfigError, DataError
from brats_ad.models.output import ModelOutput


@dataclass(frozen=True)
class ThresholdConfig:
    """Hyper-parameters of :class:`IntensityThreshold` (JSON-safe; saved in checkpoints)."""

    spatial_dims: int
    in_channels: int = 4
    modalities: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")  # the channels, in order
    modality: str = "flair"  # which channel is the map (any accepted spelling, e.g. "t2f")
    channel: int | None = None  # explicit channel index; overrides ``modality`` when set
    top_percent: float = 1.0  # image score = mean of the top this-% brain values
    background: float = -1.0  # the pipeline's background value; brain = voxels above it

    def __post_init__(self) -> None:
        modalities = (self.modalities,) if isinstance(self.modalities, str) else self.modalities
        object.__setattr__(self, "modalities", tuple(str(m) for m in modalities))
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"flair-threshold: spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        if len(self.modalities) != self.in_channels:
            raise ConfigError(
                f"flair-threshold: got in_channels={self.in_channels} but {len(self.modalities)} "
                f"modalities {list(self.modalities)}; pass the data's modality list"
            )
        if not 0.0 < self.top_percent <= 100.0:
            raise ConfigError(f"flair-threshold: top_percent must be in (0, 100], got {self.top_percent}")
        if self.channel is not None and not 0 <= self.channel < self.in_channels:
            raise ConfigError(
                f"flair-threshold: channel {self.channel} is out of range for {self.in_channels} "
                f"channels {list(self.modalities)}; use 0..{self.in_channels - 1}"
            )

    @property
    def channel_index(self) -> int:
        """The channel the map is read from (``channel`` if set, else ``modality``'s position)."""
        if self.channel is not None:
            return self.channel
        wanted = canonical_modality(self.modality)
        names = [_canonical_or_raw(m) for m in self.modalities]
        if wanted not in names:
            raise ConfigError(
                f"flair-threshold: modality {self.modality!r} is not among the data's modalities "
                f"{list(self.modalities)}; add it to the dataset's modalities or set modality/channel "
                "to one that is there"
            )
        return names.index(wanted)


def _canonical_or_raw(name: str) -> str:
    try:
        return canonical_modality(name)
    except ConfigError:  # an unknown name can still be selected by index
        return name


class IntensityThreshold(nn.Module):
    """Training-free baseline; provides ``anomaly_map`` and ``image_score``."""

    trainable = False

    def __init__(self, config: ThresholdConfig) -> None:
        super().__init__()
        self.config = config
        self.channel_index = config.channel_index  # resolve now: a missing FLAIR fails at build

    @classmethod
    def from_params(cls, **params: Any) -> "IntensityThreshold":
        """The registry factory: build from the config's fields as keyword arguments."""
        return cls(ThresholdConfig(**params))

    def _check_input(self, x: Tensor) -> None:
        cfg = self.config
        if x.ndim != cfg.spatial_dims + 2 or x.shape[1] != cfg.in_channels:
            raise DataError(
                f"flair-threshold: expected (B, {cfg.in_channels}) + {cfg.spatial_dims} spatial axes "
                f"for modalities {list(cfg.modalities)}, got shape {tuple(x.shape)}"
            )

    def anomaly_map(self, x: Tensor) -> Tensor:
        """The chosen channel, ``(B, 1, *spatial)``."""
        self._check_input(x)
        c = self.channel_index
        return x[:, c : c + 1]

    def image_score(self, amap: Tensor) -> Tensor:
        """Mean of the top ``top_percent`` % brain values per sample, ``(B,)``."""
        flat = amap.flatten(1).float()  # (B, N)
        brain = flat > self.config.background
        scores = []
        for values, inside in zip(flat, brain):  # brains differ in size: one sample at a time
            v = values[inside]
            if v.numel() == 0:
                scores.append(values.new_tensor(self.config.background))
                continue
            k = max(1, math.ceil(v.numel() * self.config.top_percent / 100.0))
            scores.append(torch.topk(v, k).values.mean())
        return torch.stack(scores)

    def forward(self, x: Tensor) -> Tensor:
        return self.anomaly_map(x)

    # -- the AnomalyModel protocol ---------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def train_step(self, x: Tensor, optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, float]:
        """Nothing to learn (``trainable`` is False; the loop does not call this)."""
        return {}

    def validation_loss(self, x: Tensor) -> Tensor:
        """Zeros ``(B,)``: there is nothing to select."""
        return x.new_zeros(x.shape[0], dtype=torch.float32)

    def infer(self, x: Tensor) -> ModelOutput:
        amap = self.anomaly_map(x)
        return ModelOutput(x=x, anomaly_map=amap, image_score=self.image_score(amap))
