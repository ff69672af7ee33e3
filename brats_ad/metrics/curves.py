"""Curve statistics from binned counts, vectorised over leading (bootstrap) axes.

All functions take ``neg`` and ``pos``: float64 arrays of shape (..., n_bins) holding the number of
negative / positive voxels per bin in *descending* score order, so that thresholding at the lower
edge of bin ``i`` predicts bins ``0..i`` as anomalous. Ties inside a bin are handled as
scikit-learn handles tied scores; the results equal scikit-learn's whenever each bin holds a
single distinct score.
"""

from __future__ import annotations

import numpy as np


def auroc(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Area under the ROC curve, trapezoidal over ties; NaN where a class is empty.

    Notes
    -----
    ``AUROC = sum_i neg_i * (TP_{i-1} + pos_i / 2) / (P * N)``, the Mann-Whitney statistic with
    ties counted one half, where ``TP_{i-1}`` counts positives in bins scoring above bin ``i``.
    """
    n_pos, n_neg = pos.sum(-1), neg.sum(-1)
    above = np.cumsum(pos, axis=-1) - pos
    area = (neg * (above + 0.5 * pos)).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return area / (n_pos * n_neg)


def average_precision(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Step-wise average precision ``sum_i (R_i - R_{i-1}) P_i``; NaN without positives.

    Notes
    -----
    This is scikit-learn's ``average_precision_score`` (no interpolation, no trapezoid):
    ``R_i = TP_i / P`` and ``P_i = TP_i / (TP_i + FP_i)`` at each threshold.
    """
    tp, fp = np.cumsum(pos, axis=-1), np.cumsum(neg, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        return (pos * precision).sum(-1) / pos.sum(-1)


def dice_curve(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Pooled Dice ``2 TP / (2 TP + FP + FN) = 2 TP / (TP + FP + P)`` at each bin's lower edge."""
    tp, fp = np.cumsum(pos, axis=-1), np.cumsum(neg, axis=-1)
    n_pos = pos.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2.0 * tp / (tp + fp + n_pos)


def auroc_error_bound(neg: np.ndarray, pos: np.ndarray, mixed: np.ndarray) -> float:
    """Worst-case ``|binned AUROC - AUROC|`` given which bins hold several distinct scores.

    Inside a mixed bin the true pair count lies in ``[0, pos_i * neg_i]`` while the binned value
    counts ``pos_i * neg_i / 2``, hence ``sum_{i mixed} pos_i * neg_i / (2 P N)``.
    """
    return float((pos * neg)[mixed].sum() / (2.0 * pos.sum() * neg.sum()))


def average_precision_error_bound(neg: np.ndarray, pos: np.ndarray, mixed: np.ndarray) -> float:
    """Worst-case ``|binned AP - AP|`` given which bins hold several distinct scores.

    Every precision reached inside mixed bin ``i`` lies in
    ``[(TP_{i-1} + 1) / (TP_{i-1} + 1 + FP_i), TP_i / (TP_i + FP_{i-1})]`` and so does the binned
    one, hence ``sum_{i mixed} pos_i / P * (high_i - low_i)``.
    """
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    has = (pos > 0) & mixed
    tp, fp, p, n = tp[has], fp[has], pos[has], neg[has]
    high = tp / (tp + fp - n)
    low = (tp - p + 1) / (tp - p + 1 + fp)
    return float((p * (high - low)).sum() / pos.sum())


def dice_error_bound(neg: np.ndarray, pos: np.ndarray, mixed: np.ndarray, best: float) -> float:
    """How much higher the best Dice over *all* distinct thresholds can be than ``best``.

    Inside bin ``i`` a threshold reaches at most ``TP_i`` true and at least ``FP_{i-1}`` false
    positives, so Dice there is at most ``2 TP_i / (TP_i + FP_{i-1} + P)``; unmixed bins have
    no threshold inside.
    """
    if not mixed.any():
        return 0.0
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    with np.errstate(invalid="ignore", divide="ignore"):
        ceiling = np.nanmax((2.0 * tp / (tp + fp - neg + pos.sum()))[mixed])
    return float(max(ceiling - best, 0.0))
