"""Sample-level metrics (a slice, patch or volume contains tumour): AUROC and AUPRC via scikit-learn.

Samples are few (hundreds to thousands), so scikit-learn computes them exactly in memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from brats_ad.metrics._checks import (
    ON_UNDEFINED,
    binary_labels,
    check_option,
    check_same_shape,
    finite_1d,
    to_numpy,
    undefined,
)

_DOC_REFS = """
    References
    ----------
    .. [1] T. Fawcett, "An introduction to ROC analysis", Pattern Recognition Letters 27(8),
       861-874, 2006. doi:10.1016/j.patrec.2005.10.010
    .. [2] scikit-learn ``roc_auc_score`` / ``average_precision_score`` (step-wise AP).
"""


def _checked(y_true: Any, y_score: Any, sample_weight: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    truth = to_numpy(y_true, "y_true")
    score = to_numpy(y_score, "y_score")
    check_same_shape(truth, score, "y_true", "y_score")
    if truth.ndim != 1:
        raise ValueError(f"sample metrics expect 1-D arrays (one value per sample); got shape {truth.shape}; "
                         "use the voxel metrics for maps, or ravel per-sample scores")
    weight = None
    if sample_weight is not None:
        weight = finite_1d(to_numpy(sample_weight, "sample_weight"), "sample_weight")
        check_same_shape(truth, weight, "y_true", "sample_weight")
    return binary_labels(truth, "y_true"), finite_1d(score, "y_score"), weight


def _defined(truth: np.ndarray, weight: np.ndarray | None, need_negative: bool, name: str, on_undefined: str) -> bool:
    w = np.ones(truth.size) if weight is None else weight
    n_pos, n_neg = float(w[truth].sum()), float(w[~truth].sum())
    if n_pos > 0 and (n_neg > 0 or not need_negative):
        return True
    missing = "positive (tumour)" if n_pos == 0 else "negative (healthy)"
    undefined(f"sample {name} is undefined without a {missing} sample; got {n_pos:g} positive and "
              f"{n_neg:g} negative; evaluate a split holding both", on_undefined)
    return False


def sample_auroc_score(y_true: Any, y_score: Any, *, sample_weight: Any = None, on_undefined: str = "raise") -> float:
    """AUROC over samples (slices or volumes), ties counted one half.

    Parameters
    ----------
    y_true : array-like of bool or {0, 1}, shape (n_samples,)
        1 = the sample contains tumour.
    y_score : array-like of float, shape (n_samples,)
        Sample anomaly scores.
    sample_weight : array-like of float, shape (n_samples,), optional
        E.g. bootstrap multiplicities.
    on_undefined : {"raise", "nan"}, default "raise"

    Returns
    -------
    float
        ``P(score_pos > score_neg) + P(score_pos == score_neg) / 2``.
    {refs}
    Examples
    --------
    >>> sample_auroc_score([0, 0, 1, 1, 0, 1, 0, 0], [0.1, 0.2, 0.9, 0.4, 0.3, 0.8, 0.5, 0.0])
    0.9333333333333333
    """
    check_option(on_undefined, "on_undefined", ON_UNDEFINED)
    truth, score, weight = _checked(y_true, y_score, sample_weight)
    if not _defined(truth, weight, True, "AUROC", on_undefined):
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, score, sample_weight=weight))


def sample_auprc_score(y_true: Any, y_score: Any, *, sample_weight: Any = None, on_undefined: str = "raise") -> float:
    """Average precision over samples, scikit-learn's step-wise definition.

    Parameters
    ----------
    y_true : array-like of bool or {0, 1}, shape (n_samples,)
    y_score : array-like of float, shape (n_samples,)
    sample_weight : array-like of float, shape (n_samples,), optional
    on_undefined : {"raise", "nan"}, default "raise"

    Returns
    -------
    float
        ``AP = sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds.
    {refs}
    Examples
    --------
    >>> round(sample_auprc_score([0, 0, 1, 1, 0, 1, 0, 0], [0.1, 0.2, 0.9, 0.4, 0.3, 0.8, 0.5, 0.0]), 4)
    0.9167
    """
    check_option(on_undefined, "on_undefined", ON_UNDEFINED)
    truth, score, weight = _checked(y_true, y_score, sample_weight)
    if not _defined(truth, weight, False, "AUPRC", on_undefined):
        return float("nan")
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(truth, score, sample_weight=weight))


sample_auroc_score.__doc__ = sample_auroc_score.__doc__.replace("{refs}", _DOC_REFS)
sample_auprc_score.__doc__ = sample_auprc_score.__doc__.replace("{refs}", _DOC_REFS)


class SampleAUROC:
    """Registered metric ``sample_auroc_score``: ``metric(y_true, y_score) -> float``."""

    name = "sample_auroc_score"
    level = "sample"

    def __init__(self, *, on_undefined: str = "raise") -> None:
        self.on_undefined = check_option(on_undefined, "on_undefined", ON_UNDEFINED)

    def __call__(self, y_true: Any, y_score: Any) -> float:
        return sample_auroc_score(y_true, y_score, on_undefined=self.on_undefined)


class SampleAUPRC(SampleAUROC):
    """Registered metric ``sample_auprc_score``: ``metric(y_true, y_score) -> float``."""

    name = "sample_auprc_score"

    def __call__(self, y_true: Any, y_score: Any) -> float:
        return sample_auprc_score(y_true, y_score, on_undefined=self.on_undefined)
