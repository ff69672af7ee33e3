"""Patient-level bootstrap confidence intervals (cases resampled with replacement, seeded).

Voxels of one patient are not independent, so the unit of resampling is the case. Voxel metrics
reuse the per-case histograms of :class:`~brats_ad.metrics.voxel.VoxelAccumulator`: a replicate
is a weighted sum of case histograms (one matrix product for a batch of replicates), never a pass
over voxels.

References
----------
.. [1] B. Efron, R. J. Tibshirani, "An Introduction to the Bootstrap", Chapman & Hall, 1993
   (percentile interval, ch. 13).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

import numpy as np

from brats_ad.errors import UndefinedMetricError
from brats_ad.metrics import curves
from brats_ad.metrics._checks import check_option, finite_1d, to_numpy
from brats_ad.metrics.streaming import _regrid
from brats_ad.metrics.voxel import VoxelAccumulator

VOXEL_METRICS = ("auroc", "auprc", "oracle_dice")
SAMPLE_METRICS = ("auroc", "auprc")


@dataclass(frozen=True)
class ConfidenceInterval:
    """A percentile bootstrap interval; unpacks as ``low, high = ci``.

    ``n_undefined`` counts replicates where the metric was undefined (e.g. no tumour case drawn);
    they are left out of the percentiles.
    """

    low: float
    high: float
    level: float
    n_boot: int
    n_undefined: int
    seed: int

    def __iter__(self) -> Iterator[float]:
        return iter((self.low, self.high))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_common(n_boot: int, level: float, seed: int) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, e.g. 1000; got {n_boot!r}")
    if not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95; got {level!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer; got {seed!r}")


def case_weights(n_cases: int, *, n_boot: int, seed: int) -> np.ndarray:
    """How often each case is drawn in each replicate: int64 (n_boot, n_cases), rows sum to n_cases.

    Drawing ``n_cases`` cases with replacement is a multinomial draw with equal probabilities.
    """
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_cases, np.full(n_cases, 1.0 / n_cases), size=n_boot)


def _interval(replicates: np.ndarray, level: float, n_boot: int, seed: int) -> ConfidenceInterval:
    ok = replicates[np.isfinite(replicates)]
    if ok.size == 0:
        raise UndefinedMetricError(
            f"every one of {n_boot} bootstrap replicates was undefined; evaluate more cases "
            "(with and without tumour)"
        )
    low, high = np.quantile(ok, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return ConfidenceInterval(float(low), float(high), float(level), int(n_boot), int(replicates.size - ok.size), int(seed))


def bootstrap_voxel_ci(
    test: VoxelAccumulator,
    *,
    metric: str = "auroc",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    bins_log2: int = 13,
) -> ConfidenceInterval:
    """Bootstrap interval of a pooled voxel metric, resampling cases.

    Parameters
    ----------
    test : VoxelAccumulator
        Updated with ``case_id`` for every volume (its per-case histograms are resampled).
    metric : {"auroc", "auprc", "oracle_dice"}, default "auroc"
    n_boot : int, default 1000
    level : float, default 0.95
    seed : int, default 0
    bins_log2 : int, default 13
        Bins of the common grid the case histograms are summed on (memory
        ``n_cases * 16 * 2**bins_log2`` bytes).

    Returns
    -------
    ConfidenceInterval
        Percentile interval ``(low, high)``.

    Notes
    -----
    Replicate ``b`` draws case multiplicities ``w_b`` (multinomial) and evaluates the metric on
    the histogram ``sum_c w_bc H_c``. The common grid is coarser than the pooled histogram; its
    discretisation error (bounded as in :class:`VoxelAccumulator`) is far below the interval width.

    Examples
    --------
    >>> import numpy as np
    >>> acc = VoxelAccumulator()
    >>> rng = np.random.default_rng(0)
    >>> for case in range(6):
    ...     labels = np.zeros((2, 2, 2), dtype=bool); labels[0, 0] = True
    ...     acc.update(rng.random((2, 2, 2)) + labels, labels, case_id=str(case))
    >>> low, high = bootstrap_voxel_ci(acc, n_boot=200)
    >>> 0.5 < low <= high <= 1.0
    True
    """
    check_option(metric, "metric", VOXEL_METRICS)
    _check_common(n_boot, level, seed)
    hists = [test.case_histograms[c] for c in sorted(test.case_histograms) if test.case_histograms[c].key_min is not None]
    if not hists:
        raise UndefinedMetricError(
            "no per-case histograms to resample; call VoxelAccumulator.update(..., case_id=...) for each volume"
        )
    capacity = 1 << bins_log2
    shift = max(h.shift for h in hists)
    lo_key, hi_key = min(h.key_min for h in hists), max(h.key_max for h in hists)
    while (hi_key >> shift) - (lo_key >> shift) >= capacity:
        shift += 1
    lo_bin, length = lo_key >> shift, (hi_key >> shift) - (lo_key >> shift) + 1
    stack = np.stack([_regrid(h._grid, h.lo_bin, h.shift, lo_bin, shift, length).counts for h in hists])
    stack = stack[:, stack.any(axis=(0, 2))][:, ::-1].astype(np.float64)  # (cases, bins desc, 2)
    neg_c, pos_c = stack[..., 0], stack[..., 1]
    weights = case_weights(len(hists), n_boot=n_boot, seed=seed).astype(np.float64)
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray] = {
        "auroc": curves.auroc,
        "auprc": curves.average_precision,
        "oracle_dice": lambda n, p: np.nanmax(curves.dice_curve(n, p), axis=-1),
    }[metric]
    replicates = np.empty(n_boot)
    chunk = max(1, 2**22 // max(neg_c.shape[1], 1))  # bound the (chunk, bins) temporaries
    with np.errstate(invalid="ignore", divide="ignore"):
        for start in range(0, n_boot, chunk):
            w = weights[start : start + chunk]
            replicates[start : start + chunk] = statistic(w @ neg_c, w @ pos_c)
    if metric == "auroc":  # a replicate without one class is undefined, not a number
        n_pos, n_neg = weights @ pos_c.sum(1), weights @ neg_c.sum(1)
        replicates[(n_pos == 0) | (n_neg == 0)] = np.nan
    return _interval(replicates, level, n_boot, seed)


def bootstrap_mean_ci(values: Any, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> ConfidenceInterval:
    """Bootstrap interval of the mean of per-case values (e.g. per-volume Dice).

    Parameters
    ----------
    values : array-like of float, shape (n_cases,)
    n_boot, level, seed : see :func:`bootstrap_voxel_ci`

    Returns
    -------
    ConfidenceInterval

    Examples
    --------
    >>> low, high = bootstrap_mean_ci([0.7, 0.8, 0.75, 0.9, 0.6, 0.85, 0.8, 0.7], n_boot=500)
    >>> 0.65 < low < 0.76 < high < 0.85
    True
    """
    _check_common(n_boot, level, seed)
    arr = finite_1d(to_numpy(values, "values"), "values")
    if arr.size == 0:
        raise UndefinedMetricError("no per-case values to resample; got an empty array")
    weights = case_weights(arr.size, n_boot=n_boot, seed=seed)
    return _interval(weights @ arr / arr.size, level, n_boot, seed)


def bootstrap_sample_ci(
    y_true: Any,
    y_score: Any,
    groups: Any,
    *,
    metric: str = "auroc",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> ConfidenceInterval:
    """Bootstrap interval of a sample-level metric, resampling patients (``groups``).

    Parameters
    ----------
    y_true : array-like of bool or {0, 1}, shape (n_samples,)
    y_score : array-like of float, shape (n_samples,)
    groups : array-like, shape (n_samples,)
        Patient / case id of each sample (slices of one patient are drawn together).
    metric : {"auroc", "auprc"}, default "auroc"
    n_boot, level, seed : see :func:`bootstrap_voxel_ci`

    Returns
    -------
    ConfidenceInterval

    Notes
    -----
    A replicate weights each sample by its patient's multiplicity (``sample_weight``), which is
    the same as concatenating the drawn patients' samples.

    Examples
    --------
    >>> y = [0, 1, 0, 1, 0, 1, 0, 1]
    >>> s = [0.1, 0.9, 0.2, 0.7, 0.4, 0.6, 0.3, 0.8]
    >>> low, high = bootstrap_sample_ci(y, s, [0, 0, 1, 1, 2, 2, 3, 3], n_boot=100)
    >>> low, high
    (1.0, 1.0)
    """
    from brats_ad.metrics.sample import sample_auprc_score, sample_auroc_score

    check_option(metric, "metric", SAMPLE_METRICS)
    _check_common(n_boot, level, seed)
    groups = to_numpy(groups, "groups")
    if groups.shape != np.shape(to_numpy(y_true, "y_true")):
        raise ValueError(f"groups must have one id per sample; got groups {groups.shape} and y_true {np.shape(y_true)}")
    _, inverse = np.unique(groups, return_inverse=True)
    n_groups = int(inverse.max()) + 1 if inverse.size else 0
    if n_groups == 0:
        raise UndefinedMetricError("no samples to resample; got empty arrays")
    function = sample_auroc_score if metric == "auroc" else sample_auprc_score
    function(y_true, y_score, on_undefined="raise")  # checks inputs once, on the full data
    weights = case_weights(n_groups, n_boot=n_boot, seed=seed)
    replicates = np.array([function(y_true, y_score, sample_weight=w[inverse], on_undefined="nan") for w in weights])
    return _interval(replicates, level, n_boot, seed)
