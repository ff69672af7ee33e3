"""``residual``: the contextual loss L_con as a map, per-voxel ``|x - x'|`` (or squared).

GANomaly's L_con (Akcay et al. 2018) and every reconstruction-based detector (Baur et al. 2021)
score a voxel by how badly the healthy-trained model reconstructs it. Channels (modalities) are
averaged, or only the chosen ones are used (e.g. FLAIR alone).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import Tensor

from brats_ad.errors import ConfigError, DataError
from brats_ad.models.output import ModelOutput
from brats_ad.scorers.common import MapScorer, brain_region, check_power, masked_mean, same_shape, topk_mean


def check_channels(channels: Any, scorer: str) -> tuple[int, ...] | None:
    """``None`` (all channels) or a non-empty list of distinct channel indices."""
    if channels is None:
        return None
    if isinstance(channels, int) and not isinstance(channels, bool):
        channels = [channels]
    if (not isinstance(channels, Sequence) or isinstance(channels, str) or not channels
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in channels)
            or len(set(channels)) != len(channels)):
        raise ConfigError(
            f"scorer {scorer!r}: channels must be null (mean over all) or a list of distinct "
            f"channel indices >= 0 like [3], got {channels!r}"
        )
    return tuple(int(c) for c in channels)


def residual_map(output: ModelOutput, power: int, channels: tuple[int, ...] | None, scorer: str) -> Tensor:
    """Mean over the selected channels of ``|x - x'| ** power``: ``(B, 1, *spatial)`` float32."""
    x, rec = output.x, output.reconstruction
    same_shape(x, rec, scorer, "x and reconstruction")
    if channels is not None:
        if max(channels) >= x.shape[1]:
            raise DataError(
                f"scorer {scorer!r}: channels {list(channels)} ask for channel {max(channels)} but "
                f"the input has {x.shape[1]} channel(s); use indices 0..{x.shape[1] - 1}"
            )
        index = list(channels)
        x, rec = x[:, index], rec[:, index]
    diff = (x.float() - rec.float()).abs()
    if power == 2:
        diff = diff.square()
    return diff.mean(1, keepdim=True)


class Residual(MapScorer):
    """Per-voxel reconstruction error; sample score = its mean over the brain.

    Parameters
    ----------
    power: 1 (``|x - x'|``, L1, default) or 2 (squared error).
    channels: ``None`` = mean over all channels; a list of channel indices = mean over those.
    top_percent: ``None`` = sample score is the mean over the brain; a number in (0, 100] = the
        mean of the top ``top_percent`` % brain voxels (a small lesion is not diluted by a large
        brain).
    postprocess: see :class:`~brats_ad.scorers.postprocess.PostProcess`.
    """

    name = "residual"
    requires = frozenset({"reconstruction"})
    map_kind = "voxel"

    def __init__(self, power: int = 1, channels: Sequence[int] | None = None,
                 top_percent: float | None = None, postprocess: Mapping[str, Any] | None = None) -> None:
        super().__init__(postprocess)
        self.power = check_power(power, self.name)
        self.channels = check_channels(channels, self.name)
        if top_percent is not None and (isinstance(top_percent, bool) or not isinstance(top_percent, (int, float))
                                        or not 0.0 < top_percent <= 100.0):
            raise ConfigError(f"scorer 'residual': top_percent must be null or in (0, 100], got {top_percent!r}")
        self.top_percent = None if top_percent is None else float(top_percent)

    def anomaly_map(self, output: ModelOutput) -> Tensor:
        self.check(output)
        return residual_map(output, self.power, self.channels, self.name)

    def sample_score(self, amap: Tensor, output: ModelOutput) -> Tensor:
        region = brain_region(output)
        if self.top_percent is None:
            return masked_mean(amap, region)
        return topk_mean(amap, region, self.top_percent)
