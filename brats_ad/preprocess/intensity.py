"""Intensity normalisation inside the brain: median scaling, z-score and percentile scaling.

MRI intensities have no absolute unit, so each channel is normalised on its own brain voxels.
A constant channel (or an empty brain mask) gives zeros in the brain and a warning, never NaN.

Which statistic anchors the scale matters more than it looks. Benchmarks pool voxels of many
volumes and apply *one* threshold, so healthy tissue must land on the same values in every
volume. Upper percentiles and the standard deviation are pulled by the tumour itself (BraTS
tumours cover ~1-20 % of the brain), the median is not: on the embedded synthetic data the
FLAIR threshold's pooled oracle Dice is 0.27 after ``percentile-scale``, 0.68 after ``zscore`` and
0.74 after ``median-scale``, while its mean per-volume best Dice is 0.70-0.73 for all three
(``benchmarks/bench_normalisation.py``; RESULTS.md). Hence ``median-scale`` is the default.

Where the median lands matters to the learned models: centred on it (the default ``scale`` 2,
healthy tissue around 0 where tanh outputs and fresh networks sit) GANomaly's residual reaches
voxel AUROC 0.81 on the synthetic data, against 0.58 with the median at -0.5 (``scale`` 4) and
0.56 after ``percentile-scale`` (``benchmarks/bench_normalisation_models.py``).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np

from brats_ad.data.scan import Scan
from brats_ad.errors import ConfigError
from brats_ad.preprocess.base import brain_mask_of, check_scan, from_memory_order, memory_order, with_step

_EPS = 1e-6
#: Widest value range (max - min) of whole-number inputs that get the histogram percentile.
_HIST_MAX_BINS = 1 << 20


class ZScore:
    """Per channel: ``(x - mean) / std`` over brain voxels; voxels outside get ``background``."""

    name = "zscore"

    def __init__(self, background: float = 0.0) -> None:
        self.background = _finite(background, "background", self.name)

    def __call__(self, scan: Scan) -> Scan:
        def channel(values: np.ndarray) -> tuple[np.ndarray | None, dict[str, float], str | None]:
            values = values.astype(np.float64)
            mean = float(values.mean()) if values.size else 0.0
            std = float(values.std()) if values.size else 0.0
            return (None if std < _EPS else (values - mean) / std), {"mean": mean, "std": std}, None

        image, mask, stats = _per_channel(scan, self.name, self.background, channel)
        return with_step(scan, self.name, {"stats": stats}, image=image, brain_mask=mask)


class MedianScale:
    """Per channel: ``2 x / (scale * median) - 1`` with the median of brain voxels; nothing is
    clipped, and with ``compress`` values above ``knee`` are squeezed smoothly below +1.

    With the default ``scale`` 2 this is ``x / median - 1``, each voxel's relative deviation from
    the brain median: zero signal maps to -1 (the background value, so background and the
    darkest tissue meet), the median to 0 and twice the median to +1. A larger ``scale`` moves
    the median down (``2 / scale - 1``); learned models trained worse that way on the synthetic
    data (module docstring).

    Bright tissue can lie far above twice the median: on a real BraTS case 11.6 % of the T2
    brain (CSF) and 1.7 % of T1ce, where a tanh generator (GANomaly, AnoGAN) cannot follow; FLAIR
    stays below ~1.3 (0.01 % above 1). ``compress = true`` (used by the four-channel real
    config) sends values above ``knee`` through ``knee + (1 - knee) u / (1 + u)`` with
    ``u = (v - knee) / (1 - knee)``: the identity's slope at the knee, strictly increasing (the
    same for every volume, so rankings and threshold metrics are unchanged) and below +1; an
    algebraic curve, not tanh, so values stay apart (3.85, the real T2 maximum, maps to 0.98
    with knee 0.8). Off by default: on the synthetic data, whose T2 stays below +1, it only
    flattened tumour contrast (GANomaly latent AUROC 0.72 -> 0.61 at knee 0.8).
    """

    name = "median-scale"

    def __init__(self, scale: float = 2.0, compress: bool = False, knee: float = 0.8, background: float = -1.0) -> None:
        self.scale = _finite(scale, "scale", self.name)
        if self.scale <= 0:
            raise ConfigError(f"{self.name}: scale must be > 0, got {scale!r}; e.g. 2 (2x the median maps to +1)")
        self.knee = _finite(knee, "knee", self.name)
        if not -1.0 < self.knee < 1.0:
            raise ConfigError(f"{self.name}: knee must be in (-1, 1), got {knee!r}; set compress = false for none")
        if not isinstance(compress, bool):
            raise ConfigError(f"{self.name}: compress must be true or false, got {compress!r}")
        self.compress = compress
        self.background = _finite(background, "background", self.name)

    def __call__(self, scan: Scan) -> Scan:
        def channel(values: np.ndarray) -> tuple[np.ndarray | None, float, str | None]:
            median = brain_percentiles(values, (50.0,))[0] if values.size else 0.0
            if median < _EPS:  # empty, constant-zero or mostly negative channel: no usable scale
                return None, median, f"has brain median {median:g} (need > 0)"
            values *= np.float32(2.0 / (self.scale * median))
            values -= np.float32(1.0)
            if self.compress:
                compress_above(values, self.knee)
            return values, median, None

        image, mask, medians = _per_channel(scan, self.name, self.background, channel)
        return with_step(scan, self.name, {"medians": medians}, image=image, brain_mask=mask)


def compress_above(values: np.ndarray, knee: float) -> None:
    """In place: ``v > knee`` becomes ``knee + (1 - knee) u / (1 + u)``, ``u = (v - knee) / (1 - knee)``."""
    above = values > knee
    if above.any():
        span = np.float32(1.0 - knee)
        u = (values[above] - np.float32(knee)) / span
        values[above] = np.float32(knee) + span * (u / (np.float32(1.0) + u))


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
        def channel(values: np.ndarray) -> tuple[np.ndarray | None, list[float], str | None]:
            lo, hi = brain_percentiles(values, (self.lower, self.upper)) if values.size else (0.0, 0.0)
            if hi - lo < _EPS:
                return None, [lo, hi], None
            np.clip(values, lo, hi, out=values)
            values -= np.float32(lo)
            values *= np.float32(2.0 / (hi - lo))
            values -= np.float32(1.0)
            return values, [lo, hi], None

        image, mask, ranges = _per_channel(scan, self.name, self.background, channel)
        return with_step(scan, self.name, {"ranges": ranges}, image=image, brain_mask=mask)


def _per_channel(
    scan: Scan, step: str, background: float,
    channel: Callable[[np.ndarray], tuple[np.ndarray | None, Any, str | None]],
) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """What every intensity step shares: normalise each channel's brain voxels, fill the rest.

    ``channel(values)`` gets a channel's brain voxels (a float32 copy it may modify) and returns
    ``(normalised values, statistic for meta, why)``; ``None`` values mean the channel has no
    usable scale: it becomes 0 in the brain with a warning (``why``, default "is constant").
    Returns ``(image, brain mask, statistics)``.
    """
    check_scan(scan, step)
    mask = brain_mask_of(scan)
    brain = _BrainVoxels(scan.image, mask)
    out = brain.output(background)
    stats = []
    for c in range(scan.image.shape[0]):
        values = brain.values(c)
        result, stat, why = channel(values)
        if result is None:
            _warn_constant(scan, step, c, values.size, why or "is constant in the brain")
            result = 0.0
        brain.put(out, c, result)
        stats.append(stat)
    return brain.as_image(out), mask, stats


def brain_percentiles(values: np.ndarray, percents: Sequence[float]) -> list[float]:
    """``np.percentile(values, percents)`` (linear method), exact, in O(N) for whole numbers.

    MRI files store integers (BraTS: int16), so after the float32 cast the brain values are
    whole numbers in a small range: a histogram (``bincount``) gives every order statistic in
    one pass, ~10x faster than the partial sort behind ``np.percentile``. Hand-written because
    numpy has no histogram percentile; the interpolation below is numpy's own ('linear': virtual
    index ``q (n - 1)``, then its ``_lerp``), so results are bit-identical. Other inputs go to
    ``np.percentile``.
    """
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    n = values.size
    vmin, vmax = (float(values.min()), float(values.max())) if n else (0.0, 0.0)
    whole = (
        n > 0 and np.isfinite(vmin) and np.isfinite(vmax) and vmax - vmin <= _HIST_MAX_BINS
        and max(-vmin, vmax) < 2.0**24 and np.array_equal(np.rint(values), values)
    )
    if not whole:
        return [float(v) for v in np.percentile(values, list(percents))]
    counts = np.bincount((values - np.float32(vmin)).astype(np.intp))
    cumulative = np.cumsum(counts)

    def order_stat(k: int) -> np.float32:  # the k-th smallest value (0-based)
        return np.float32(vmin + int(np.searchsorted(cumulative, k, side="right")))

    out = []
    for q in np.true_divide(np.asarray(percents, dtype=np.float64), 100):
        virtual = (n - 1) * q  # numpy's 'linear' get_virtual_index
        if virtual >= n - 1:
            out.append(float(vmax))
            continue
        previous = int(np.floor(virtual))
        gamma = virtual - previous
        a, b = order_stat(previous), order_stat(previous + 1)
        diff = np.float32(b - a)
        value = b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma
        out.append(float(value))
    return out


class _BrainVoxels:
    """Gather the brain voxels of each channel and scatter results, by flat index, in memory order.

    Hand-written because boolean indexing (``channel[mask]``) walks the volume in logical
    order, striding across memory unless the image is C-contiguous; flat indices computed once
    on the mask in memory order make every channel one ``take`` and one ``put`` over brain
    voxels only, whatever the layout. The output has the input's memory layout (including the
    flipped axes of an oriented view, like orient's own output), so no voxel is moved twice.
    """

    def __init__(self, image: np.ndarray, mask: np.ndarray) -> None:
        mem, self.axes, self.flips = memory_order(np.asarray(image))
        self.flat = np.ascontiguousarray(mem).reshape(-1)
        self.shape = mem.shape
        channels = image.shape[0]
        k = self.axes.index(0)  # where the channel axis lies in memory
        self.stride = int(np.prod(mem.shape[k + 1:], dtype=np.int64))  # elements per channel block
        spatial_axes = tuple(a - 1 for a in self.axes if a != 0)
        spatial = np.asarray(mask, dtype=bool)[self.flips[1:]].transpose(spatial_axes)
        idx = np.flatnonzero(np.ascontiguousarray(spatial))
        # spatial flat index -> flat index of channel 0 in the (..., C, ...) memory block
        self.index = idx + (idx // self.stride) * ((channels - 1) * self.stride) if channels > 1 else idx

    def values(self, c: int) -> np.ndarray:
        """Brain voxels of channel ``c`` (a new float32 array, free to modify)."""
        return self.flat.take(self.index + c * self.stride).astype(np.float32, copy=False)

    def output(self, fill: float) -> np.ndarray:
        return np.full(self.shape, fill, dtype=np.float32)

    def put(self, out: np.ndarray, c: int, values: Any) -> None:
        out.reshape(-1)[self.index + c * self.stride] = values

    def as_image(self, out: np.ndarray) -> np.ndarray:
        """``out`` (memory order) as a ``(C, X, Y, Z)`` view."""
        return from_memory_order(out, self.axes, self.flips)


def _finite(value: float, name: str, step: str) -> float:
    value = float(value)
    if not np.isfinite(value):
        raise ConfigError(f"{step}: {name} must be a finite number, got {value!r}")
    return value


def _warn_constant(scan: Scan, step: str, channel: int, n_voxels: int, what: str = "is constant in the brain") -> None:
    modality = scan.modalities[channel] if channel < len(scan.modalities) else str(channel)
    what = "has no brain voxels" if n_voxels == 0 else what
    warnings.warn(
        f"case {scan.case_id!r}: {step}: channel {modality!r} {what}; it is set to 0 "
        "(check the file or the brain mask)",
        RuntimeWarning,
        stacklevel=4,
    )
