"""Intensity normalisation inside the brain: z-score and percentile scaling to [-1, 1].

MRI intensities have no absolute unit, so each channel is normalised on its own brain voxels.
A constant channel (or an empty brain mask) gives zeros in the brain and a warning, never NaN.
"""

from __future__ import annotations

import warnings

import numpy as np

from brats_ad.data.scan import Scan
from brats_ad.errors import ConfigError
from brats_ad.preprocess.base import brain_mask_of, check_scan, with_step

_EPS = 1e-6


class ZScore:
    """Per channel: ``(x - mean) / std`` over brain voxels; voxels outside get ``background``."""

    name = "zscore"

    def __init__(self, background: float = 0.0) -> None:
        self.background = _finite(background, "background", self.name)

    def __call__(self, scan: Scan) -> Scan:
        check_scan(scan, self.name)
        mask = brain_mask_of(scan)
        out, index = _output(scan, mask, self.background)
        stats = []
        for c, channel in enumerate(scan.image):
            values = np.asarray(channel[mask], dtype=np.float64)
            mean = float(values.mean()) if values.size else 0.0
            std = float(values.std()) if values.size else 0.0
            if std < _EPS:
                _warn_constant(scan, self.name, c, values.size)
                out[c][index] = 0.0
            else:
                out[c][index] = (values - mean) / std
            stats.append({"mean": mean, "std": std})
        out = out.reshape(scan.image.shape)
        return with_step(scan, self.name, {"stats": stats}, image=out, brain_mask=mask)


class PercentileScale:
    """Per channel: clip to the ``lower``/``upper`` percentiles of brain voxels, scale to [-1, 1].

    Voxels outside the brain get ``background`` (default -1, the bottom of the range), so the
    background looks like the darkest tissue to a network with a tanh output.
    """

    name = "percentile-scale"

    def __init__(self, lower: float = 0.5, upper: float = 99.5, background: float = -1.0) -> None:
        lower, upper = float(lower), float(upper)
        if not 0.0 <= lower < upper <= 100.0:
            raise ConfigError(
                f"percentile-scale: need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}"
            )
        self.lower, self.upper = lower, upper
        self.background = _finite(background, "background", self.name)

    def __call__(self, scan: Scan) -> Scan:
        check_scan(scan, self.name)
        mask = brain_mask_of(scan)
        out, index = _output(scan, mask, self.background)
        ranges = []
        for c, channel in enumerate(scan.image):
            values = np.asarray(channel[mask], dtype=np.float32)
            if values.size:
                lo, hi = (float(v) for v in np.percentile(values, [self.lower, self.upper]))
            else:
                lo = hi = 0.0
            if hi - lo < _EPS:
                _warn_constant(scan, self.name, c, values.size)
                out[c][index] = 0.0
            else:
                np.clip(values, lo, hi, out=values)
                values -= np.float32(lo)
                values *= np.float32(2.0 / (hi - lo))
                values -= np.float32(1.0)
                out[c][index] = values
            ranges.append([lo, hi])
        out = out.reshape(scan.image.shape)
        return with_step(scan, self.name, {"ranges": ranges}, image=out, brain_mask=mask)


def _output(scan: Scan, mask: np.ndarray, background: float) -> tuple[np.ndarray, np.ndarray]:
    """A (C, X*Y*Z) array filled with ``background`` and the flat indices of brain voxels.

    Writing through flat indices is several times faster than boolean-mask assignment, which
    matters on the BraTS path (4 x 240 x 240 x 155 per case).
    """
    out = np.full((scan.image.shape[0], mask.size), background, dtype=np.float32)
    return out, np.flatnonzero(mask)


def _finite(value: float, name: str, step: str) -> float:
    value = float(value)
    if not np.isfinite(value):
        raise ConfigError(f"{step}: {name} must be a finite number, got {value!r}")
    return value


def _warn_constant(scan: Scan, step: str, channel: int, n_voxels: int) -> None:
    modality = scan.modalities[channel] if channel < len(scan.modalities) else str(channel)
    what = "has no brain voxels" if n_voxels == 0 else "is constant in the brain"
    warnings.warn(
        f"case {scan.case_id!r}: {step}: channel {modality!r} {what}; it is set to 0 "
        "(check the file or the brain mask)",
        RuntimeWarning,
        stacklevel=3,
    )
