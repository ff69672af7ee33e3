"""What every built-in scorer shares: input checks, the brain region, reductions, a base class.

A scorer is three steps, each usable on its own (the patch-volume inference stitches patch maps
first and post-processes the stitched volume):

``anomaly_map(output)``
    the raw map ``(B, 1, *spatial)`` float32, voxel-aligned with ``output.x``;
``postprocess(map, brain_mask)``
    a :class:`~brats_ad.scorers.postprocess.PostProcess` (identity unless configured);
``sample_score(map, output)``
    ``(B,)`` float32, higher = more anomalous.

``scorer(output)`` runs all three and returns a :class:`~brats_ad.scorers.base.Score`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor

from brats_ad.errors import ConfigError, DataError
from brats_ad.models.output import CAPABILITIES, ModelOutput
from brats_ad.scorers.base import Score
from brats_ad.scorers.postprocess import PostProcess


def require(output: ModelOutput, scorer: str, capabilities: frozenset[str] | set[str]) -> None:
    """Raise a :class:`ConfigError` naming ``scorer`` and the first missing capability."""
    provided = output.provides()
    for cap in sorted(capabilities):
        if cap not in provided:
            fields = ", ".join(f"ModelOutput.{name}" for name in CAPABILITIES[cap])
            raise ConfigError(
                f"scorer {scorer!r} requires {cap!r} ({fields}) but the model output provides "
                f"only {sorted(provided) or 'nothing'}; pair it with a model that provides {cap!r} "
                "(see 'brats-ad plugins --kind models')"
            )


def check_image(output: ModelOutput, scorer: str) -> None:
    """``x`` is ``(B, C, *spatial)`` with 2 or 3 spatial axes; a brain mask is ``(B, 1, *spatial)``."""
    x = output.x
    if x.dim() not in (4, 5):
        raise DataError(
            f"scorer {scorer!r}: expected x of shape (B, C, H, W) or (B, C, H, W, D), got "
            f"{tuple(x.shape)}; add the batch and channel axes"
        )
    mask = output.brain_mask
    if mask is not None and tuple(mask.shape) != (x.shape[0], 1, *x.shape[2:]):
        raise DataError(
            f"scorer {scorer!r}: expected brain_mask of shape {(x.shape[0], 1, *x.shape[2:])} "
            f"to match x {tuple(x.shape)}, got {tuple(mask.shape)}"
        )


def same_shape(a: Tensor, b: Tensor, scorer: str, what: str) -> None:
    if a.shape != b.shape:
        raise DataError(
            f"scorer {scorer!r}: {what} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}; the model must return outputs aligned with its input"
        )


def brain_region(output: ModelOutput) -> Tensor:
    """The voxels a sample score averages over: ``(B, 1, *spatial)`` bool.

    ``brain_mask`` when present; otherwise every voxel. A sample whose mask is empty (a slice
    above the brain) falls back to all of its voxels, so its score is finite, never NaN.
    """
    x = output.x
    full = torch.ones((x.shape[0], 1, *x.shape[2:]), dtype=torch.bool, device=x.device)
    if output.brain_mask is None:
        return full
    mask = output.brain_mask.to(device=x.device, dtype=torch.bool)
    empty = ~mask.flatten(1).any(1)  # (B,)
    if bool(empty.any()):
        mask = mask.clone()
        mask[empty] = True
    return mask


def masked_mean(amap: Tensor, mask: Tensor) -> Tensor:
    """Per-sample mean of ``amap`` over ``mask`` (``(B, 1, *spatial)`` each) -> ``(B,)`` float32."""
    amap = amap.float()
    weights = mask.to(amap.dtype)
    total = (amap * weights).flatten(1).sum(1)
    count = weights.flatten(1).sum(1).clamp_min(1.0)
    return total / count


def topk_mean(amap: Tensor, mask: Tensor, top_percent: float) -> Tensor:
    """Per-sample mean of the top ``top_percent`` % values inside ``mask`` -> ``(B,)`` float32."""
    scores = []
    for values, inside in zip(amap.float().flatten(1), mask.flatten(1)):  # masks differ per sample
        v = values[inside]
        k = max(1, math.ceil(v.numel() * top_percent / 100.0))
        scores.append(torch.topk(v, k).values.mean())
    return torch.stack(scores)


def broadcast(per_sample: Tensor, like: Tensor) -> Tensor:
    """``(B,)`` -> ``(B, 1, *spatial)`` of ``like`` (``(B, C, *spatial)``): a constant map."""
    shape = (like.shape[0], 1, *like.shape[2:])
    view = per_sample.float().reshape(like.shape[0], *([1] * (like.dim() - 1)))
    return view.expand(shape).contiguous()


def check_power(power: Any, scorer: str) -> int:
    if power not in (1, 2) or isinstance(power, bool):
        raise ConfigError(f"scorer {scorer!r}: power must be 1 (|a - b|) or 2 ((a - b)^2), got {power!r}")
    return int(power)


class MapScorer(ABC):
    """Base class: subclasses set ``name``, ``requires``, ``map_kind`` and implement ``anomaly_map``.

    ``postprocess`` (every built-in scorer's common parameter) is a mapping of
    :class:`PostProcess` options, e.g. ``{"erode_brain": 3, "median_size": 5}``; ``None`` or
    zeros switch it off. It is recorded with the scorer's other parameters in results.
    """

    name: ClassVar[str] = "?"
    requires: ClassVar[frozenset[str]] = frozenset()
    map_kind: ClassVar[str] = "voxel"

    def __init__(self, postprocess: Mapping[str, Any] | None = None) -> None:
        self.postprocess = PostProcess.from_param(postprocess, scorer=self.name)

    def check(self, output: ModelOutput) -> None:
        require(output, self.name, self.requires)
        check_image(output, self.name)

    @abstractmethod
    def anomaly_map(self, output: ModelOutput) -> Tensor:
        """The ``(B, 1, *spatial)`` float32 map of this scorer."""

    def sample_score(self, amap: Tensor, output: ModelOutput) -> Tensor:
        """Default: the mean of the map over the brain (see :func:`brain_region`)."""
        return masked_mean(amap, brain_region(output))

    @torch.no_grad()  # scores are never trained through: keep no graph alive
    def __call__(self, output: ModelOutput) -> Score:
        amap = self.anomaly_map(output)  # checks the output
        amap = self.postprocess(amap, output.brain_mask)
        return Score(anomaly_map=amap, sample_score=self.sample_score(amap, output).float())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
