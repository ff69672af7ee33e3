"""Voxel-level AUROC and AUPRC over all brain voxels of a test set, streamed volume by volume.

Feed :class:`VoxelAccumulator` one volume at a time; memory stays bounded (a
:class:`~brats_ad.metrics.streaming.ScoreHistogram` of at most ``2**bins_log2`` bins plus one small
histogram per case for the bootstrap) whatever the number of voxels (~10^9 for BraTS 2021).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from brats_ad.metrics import curves
from brats_ad.metrics._checks import ON_UNDEFINED, check_option, undefined
from brats_ad.metrics.streaming import ScoreHistogram, prepare_keys

_REFERENCES = """
    References
    ----------
    .. [1] T. Fawcett, "An introduction to ROC analysis", Pattern Recognition Letters 27(8),
       861-874, 2006. doi:10.1016/j.patrec.2005.10.010
    .. [2] scikit-learn, ``sklearn.metrics.average_precision_score`` (step-wise AP, no
       interpolation). https://scikit-learn.org/stable/modules/generated/sklearn.metrics.average_precision_score.html
    .. [3] C. Baur, S. Denner, B. Wiestler, N. Navab, S. Albarqouni, "Autoencoders for
       unsupervised anomaly segmentation in brain MR images: a comparative study", Medical Image
       Analysis 69, 101952, 2021. doi:10.1016/j.media.2020.101952
"""


@dataclass(frozen=True)
class VoxelCurveResult:
    """Voxel AUROC / AUPRC of everything an accumulator saw, with certified error bounds.

    ``*_error_bound`` bounds ``|value - exact value|`` for the float32-rounded scores (0.0 when
    ``exact``: every bin then holds one float32 value and the values equal scikit-learn's).
    """

    auroc_score: float
    auprc_score: float
    auroc_error_bound: float
    auprc_error_bound: float
    n_positive: int
    n_negative: int
    prevalence: float
    n_bins: int
    exact: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class VoxelAccumulator:
    """Streamed voxel AUROC / AUPRC: ``update`` volume by volume, ``compute`` at the end.

    Parameters
    ----------
    bins_log2 : int, default 20
        Capacity of the pooled histogram (``2**bins_log2`` bins, 16 MiB at 20).
    case_bins_log2 : int, default 12
        Capacity of each per-case histogram kept for the patient bootstrap (64 KiB at 12).

    Attributes
    ----------
    histogram : ScoreHistogram
        Everything seen, pooled.
    case_histograms : dict of str to ScoreHistogram
        One coarse histogram per ``case_id`` given to :meth:`update`.

    Notes
    -----
    Bins are runs of consecutive float32 order keys (see :mod:`brats_ad.metrics.streaming`), so
    no score range is needed in advance, one pass suffices and many updates give bit-for-bit the
    histogram of one update. Each bin records whether it saw two distinct float32 scores. When
    none did (``exact``: e.g. uint8-quantised or float16 scores, or few distinct values) AUROC
    and AUPRC equal scikit-learn's on the float32 scores, ties included. Otherwise the error is
    at most ``sum_{i mixed} pos_i neg_i / (2 P N)`` for AUROC and
    ``sum_{i mixed} pos_i / P (high_i - low_i)`` for AUPRC (``[low_i, high_i]``: the precisions
    reachable inside bin ``i``); :meth:`compute` returns both bounds. AUROC itself is
    ``sum_i neg_i (TP_{i-1} + pos_i / 2) / (P N)`` over bins in descending score order and
    AUPRC ``sum_i pos_i / P * TP_i / (TP_i + FP_i)``.
    {references}
    Examples
    --------
    >>> import numpy as np
    >>> scores = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    >>> labels = np.zeros((2, 2, 2), dtype=bool); labels[1, 1] = True   # the two top scores
    >>> acc = VoxelAccumulator()
    >>> acc.update(scores, labels, case_id="toy")
    >>> r = acc.compute()
    >>> r.auroc_score, r.auprc_score, r.exact
    (1.0, 1.0, True)
    """

    __doc__ = __doc__.replace("{references}", _REFERENCES)

    def __init__(self, *, bins_log2: int = 20, case_bins_log2: int = 12) -> None:
        self.histogram = ScoreHistogram(bins_log2=bins_log2)
        ScoreHistogram(bins_log2=case_bins_log2)  # checks the value once, here
        self.case_bins_log2 = case_bins_log2
        self.case_histograms: dict[str, ScoreHistogram] = {}

    def update(self, scores: Any, labels: Any, *, mask: Any = None, case_id: str | None = None) -> None:
        """Add one volume.

        Parameters
        ----------
        scores : array-like of float, shape (*spatial)
            Anomaly map (higher = more anomalous); compared as float32.
        labels : array-like of bool or {0, 1}, shape (*spatial), or None
            1 = tumour voxel (pass ``seg > 0``); None: a healthy scan, every voxel 0.
        mask : array-like of bool, shape (*spatial), optional
            Brain mask: only these voxels count.
        case_id : str, optional
            Patient / case id; updates with the same id add up into one per-case histogram used by
            :func:`brats_ad.metrics.bootstrap.bootstrap_voxel_ci`.
        """
        keys, positive = prepare_keys(scores, labels, mask)
        case = None
        if case_id is not None:
            case = self.case_histograms.setdefault(str(case_id), ScoreHistogram(bins_log2=self.case_bins_log2))
        self.histogram.add_keys(keys, positive, also=case)

    def merge(self, other: "VoxelAccumulator") -> "VoxelAccumulator":
        """Add another accumulator (e.g. from a parallel worker) into this one; returns self."""
        self.histogram.merge(other.histogram)
        for case_id, hist in other.case_histograms.items():
            mine = self.case_histograms.setdefault(case_id, ScoreHistogram(bins_log2=self.case_bins_log2))
            mine.merge(hist)
        return self

    def compute(self, *, on_undefined: str = "raise") -> VoxelCurveResult:
        """AUROC and AUPRC of every voxel seen.

        Parameters
        ----------
        on_undefined : {"raise", "nan"}, default "raise"
            Without positive or without negative voxels AUROC is undefined (and AUPRC without
            positives): raise :class:`~brats_ad.errors.UndefinedMetricError`, or return NaN.

        Returns
        -------
        VoxelCurveResult
        """
        check_option(on_undefined, "on_undefined", ON_UNDEFINED)
        return curve_result(self.histogram, on_undefined=on_undefined, what="voxel")


def curve_result(hist: ScoreHistogram, *, on_undefined: str, what: str) -> VoxelCurveResult:
    """AUROC / AUPRC / bounds of one histogram (shared with the bootstrap and sample code)."""
    occupied = hist.counts.any(1)[::-1]
    counts = hist.counts[::-1][occupied].astype(np.float64)
    mixed = hist.mixed[::-1][occupied]
    neg, pos = counts[:, 0], counts[:, 1]
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    seen = f"{n_pos} positive and {n_neg} negative {what}s seen"
    if n_pos == 0 or n_neg == 0:
        missing = "positive (tumour)" if n_pos == 0 else "negative (healthy)"
        fix = "evaluate on cases with tumour" if n_pos == 0 else "include healthy voxels (the brain mask)"
        value = undefined(f"{what} AUROC is undefined without a {missing} {what}: {seen}; {fix}", on_undefined)
        auprc = value
        if n_pos > 0:
            auprc = float(curves.average_precision(neg, pos))
        return VoxelCurveResult(value, auprc, 0.0, 0.0, n_pos, n_neg,
                                n_pos / max(n_pos + n_neg, 1), len(counts), hist.exact)
    exact = hist.exact
    return VoxelCurveResult(
        auroc_score=float(curves.auroc(neg, pos)),
        auprc_score=float(curves.average_precision(neg, pos)),
        auroc_error_bound=curves.auroc_error_bound(neg, pos, mixed),
        auprc_error_bound=curves.average_precision_error_bound(neg, pos, mixed),
        n_positive=n_pos,
        n_negative=n_neg,
        prevalence=n_pos / (n_pos + n_neg),
        n_bins=len(counts),
        exact=exact,
    )


def voxel_auroc_score(y_true: Any, y_score: Any, *, mask: Any = None, on_undefined: str = "raise") -> float:
    """Voxel AUROC of one array pair (one shot through :class:`VoxelAccumulator`).

    Parameters
    ----------
    y_true : array-like of bool or {0, 1}, shape (*spatial)
        1 = anomalous voxel.
    y_score : array-like of float, shape (*spatial)
        Anomaly scores.
    mask : array-like of bool, shape (*spatial), optional
        Voxels to evaluate (brain mask).
    on_undefined : {"raise", "nan"}, default "raise"

    Returns
    -------
    float
        ``P(score_pos > score_neg) + P(score_pos == score_neg) / 2``.
    {references}
    Examples
    --------
    >>> import numpy as np
    >>> y_true = np.zeros((2, 2, 2), dtype=bool); y_true[0, 0, 0] = True
    >>> y_score = np.full((2, 2, 2), 0.5); y_score[0, 0, 0] = 0.9; y_score[1, 1, 1] = 0.9
    >>> round(voxel_auroc_score(y_true, y_score), 4)   # one tie out of 7 pairs
    0.9286
    """
    check_option(on_undefined, "on_undefined", ON_UNDEFINED)
    acc = VoxelAccumulator()
    acc.update(y_score, y_true, mask=mask)
    return acc.compute(on_undefined=on_undefined).auroc_score


def voxel_auprc_score(y_true: Any, y_score: Any, *, mask: Any = None, on_undefined: str = "raise") -> float:
    """Voxel average precision (AUPRC) of one array pair, scikit-learn's step-wise definition.

    Parameters
    ----------
    y_true : array-like of bool or {0, 1}, shape (*spatial)
    y_score : array-like of float, shape (*spatial)
    mask : array-like of bool, shape (*spatial), optional
    on_undefined : {"raise", "nan"}, default "raise"

    Returns
    -------
    float
        ``AP = sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds (descending).
    {references}
    Examples
    --------
    >>> import numpy as np
    >>> y_true = np.zeros((2, 2, 2), dtype=bool); y_true[0, 0, 0] = True
    >>> y_score = np.full((2, 2, 2), 0.5); y_score[0, 0, 0] = 0.9; y_score[1, 1, 1] = 0.9
    >>> voxel_auprc_score(y_true, y_score)   # precision 1/2 when the positive is recalled
    0.5
    """
    check_option(on_undefined, "on_undefined", ON_UNDEFINED)
    acc = VoxelAccumulator()
    acc.update(y_score, y_true, mask=mask)
    return _auprc(acc, on_undefined)


def _auprc(acc: VoxelAccumulator, on_undefined: str) -> float:
    """AP needs positives only: a set without negatives has AP 1, not an error."""
    result = acc.compute(on_undefined="nan")
    if result.n_positive == 0:
        return undefined(
            f"voxel AUPRC is undefined without a positive (tumour) voxel: {result.n_negative} negative "
            "voxels seen; evaluate on cases with tumour",
            on_undefined,
        )
    return result.auprc_score


voxel_auroc_score.__doc__ = voxel_auroc_score.__doc__.replace("{references}", _REFERENCES)
voxel_auprc_score.__doc__ = voxel_auprc_score.__doc__.replace("{references}", _REFERENCES)


class VoxelAUROC:
    """Registered metric ``voxel_auroc_score``: ``metric(test_accumulator) -> float``."""

    name = "voxel_auroc_score"
    level = "voxel"

    def __init__(self, *, on_undefined: str = "raise") -> None:
        self.on_undefined = check_option(on_undefined, "on_undefined", ON_UNDEFINED)

    def __call__(self, test: VoxelAccumulator) -> float:
        return test.compute(on_undefined=self.on_undefined).auroc_score


class VoxelAUPRC(VoxelAUROC):
    """Registered metric ``voxel_auprc_score``: ``metric(test_accumulator) -> float``."""

    name = "voxel_auprc_score"

    def __call__(self, test: VoxelAccumulator) -> float:
        return _auprc(test, self.on_undefined)
