"""``model-map``: the map a model computes itself (e.g. the FLAIR-threshold baseline), passed on.

Models that provide ``anomaly_map`` need no scorer of their own; this one lets the bench pair
them with the same metrics as every other cell. The sample score is the model's
``image_score`` when it provides one (the FLAIR baseline's top-1 % brain mean), otherwise the
mean of the (post-processed) map over the brain.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

from brats_ad.errors import DataError
from brats_ad.models.output import ModelOutput
from brats_ad.scorers.common import MapScorer, brain_region, masked_mean


class ModelMap(MapScorer):
    """``ModelOutput.anomaly_map`` as float32; sample score = ``image_score`` if present."""

    name = "model-map"
    requires = frozenset({"anomaly_map"})
    map_kind = "voxel"

    def __init__(self, postprocess: Mapping[str, Any] | None = None) -> None:
        super().__init__(postprocess)

    def anomaly_map(self, output: ModelOutput) -> Tensor:
        self.check(output)
        amap, x = output.anomaly_map, output.x
        expected = (x.shape[0], 1, *x.shape[2:])
        if tuple(amap.shape) != expected:
            raise DataError(
                f"scorer 'model-map': expected the model's anomaly_map of shape {expected} to match "
                f"x {tuple(x.shape)}, got {tuple(amap.shape)}; the model must return one map per sample"
            )
        return amap.float()

    def sample_score(self, amap: Tensor, output: ModelOutput) -> Tensor:
        if output.image_score is not None:
            return output.image_score.float().reshape(-1)
        return masked_mean(amap, brain_region(output))
