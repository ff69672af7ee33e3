"""Dice at a threshold chosen without test labels, and the oracle best Dice (⌈Dice⌉) on test.

The protocols are separated by construction: :func:`choose_threshold` (and the two protocol
functions behind it) take *one* argument of data, a validation accumulator, and return a frozen
:class:`Threshold`; test labels only ever enter :class:`DiceAccumulator` /
:func:`evaluate_at_threshold`, which take a threshold that already exists. The oracle
(:func:`oracle_dice_score`) reads test labels on purpose and says so in its name and fields.

References
----------
.. [1] F. Meissen, G. Kaissis, D. Rueckert, "Challenging current semi-supervised anomaly
   segmentation methods for brain MRI", BrainLes (MICCAI workshop) 2021, arXiv:2109.06023
   (the FLAIR-threshold baseline and its ⌈Dice⌉).
.. [2] C. Baur, S. Denner, B. Wiestler, N. Navab, S. Albarqouni, "Autoencoders for unsupervised
   anomaly segmentation in brain MR images: a comparative study", Medical Image Analysis 69,
   101952, 2021. doi:10.1016/j.media.2020.101952 (⌈Dice⌉: best Dice over thresholds on test).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np

from brats_ad.errors import UndefinedMetricError
from brats_ad.metrics import curves
from brats_ad.metrics._checks import (
    ON_UNDEFINED,
    binary_labels,
    check_option,
    check_same_shape,
    flat_mask,
    to_numpy,
    undefined,
)
from brats_ad.metrics.streaming import ScoreHistogram, keys_to_floats
from brats_ad.metrics.voxel import VoxelAccumulator

PROTOCOLS = ("best-dice", "healthy-quantile")


@dataclass(frozen=True)
class Threshold:
    """A voxel threshold: a voxel is anomalous when ``score >= value`` (float32 comparison).

    Attributes
    ----------
    value : float
        The threshold (a float32 value).
    protocol : {"best-dice", "healthy-quantile"}
    validation_dice : float or None
        Pooled validation Dice at ``value`` (best-dice protocol).
    quantile : float or None
        ``q`` of the healthy-quantile protocol.
    healthy_fpr : float
        Fraction of validation healthy voxels flagged at ``value``.
    n_voxels : int
        Validation voxels the threshold was chosen from.
    """

    value: float
    protocol: str
    validation_dice: float | None
    quantile: float | None
    healthy_fpr: float
    n_voxels: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _histogram(validation: VoxelAccumulator | ScoreHistogram) -> ScoreHistogram:
    if isinstance(validation, VoxelAccumulator):
        return validation.histogram
    if isinstance(validation, ScoreHistogram):
        return validation
    raise TypeError(
        f"validation must be a VoxelAccumulator or ScoreHistogram; got {type(validation).__name__}; "
        "stream the validation volumes into a VoxelAccumulator first"
    )


def _descending(hist: ScoreHistogram) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    occupied = hist.counts.any(1)[::-1]
    counts = hist.counts[::-1][occupied].astype(np.float64)
    return counts[:, 0], counts[:, 1], hist.thresholds()[::-1][occupied], hist.mixed[::-1][occupied]


def best_dice_threshold(validation: VoxelAccumulator | ScoreHistogram) -> Threshold:
    """The threshold maximising pooled Dice on *validation* voxels.

    Parameters
    ----------
    validation : VoxelAccumulator or ScoreHistogram
        Validation cases (scores with their labels); never test data.

    Returns
    -------
    Threshold
        Protocol ``"best-dice"``; ``value`` is the smallest score of the best bin.

    Notes
    -----
    ``Dice(t) = 2 TP(t) / (2 TP(t) + FP(t) + FN(t))`` over all validation voxels pooled, evaluated
    at every histogram bin; ties go to the highest threshold. Exact when the histogram is exact.

    Examples
    --------
    >>> import numpy as np
    >>> val = VoxelAccumulator()
    >>> scores = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    >>> labels = scores >= 6
    >>> val.update(scores, labels)
    >>> best_dice_threshold(val).value
    6.0
    """
    hist = _histogram(validation)
    neg, pos, thresholds, _ = _descending(hist)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0:
        raise UndefinedMetricError(
            f"best-Dice threshold needs tumour voxels in validation; got 0 positive of {int(n_neg)} voxels; "
            "use protocol='healthy-quantile' or add validation cases with tumour"
        )
    dice = curves.dice_curve(neg, pos)
    best = int(np.argmax(dice))
    fpr = float(np.cumsum(neg)[best] / n_neg) if n_neg else 0.0
    return Threshold(float(thresholds[best]), "best-dice", float(dice[best]), None, fpr, int(n_pos + n_neg))


def healthy_quantile_threshold(validation: VoxelAccumulator | ScoreHistogram, *, q: float = 0.995) -> Threshold:
    """The ``q``-quantile of healthy validation voxel scores (labels 0, e.g. healthy scans).

    Parameters
    ----------
    validation : VoxelAccumulator or ScoreHistogram
        Validation voxels; only the healthy ones (label 0) are read.
    q : float, default 0.995
        Quantile in (0, 1); at most ``1 - q`` of the healthy voxels score ``>=`` the threshold.

    Returns
    -------
    Threshold
        Protocol ``"healthy-quantile"``.

    Notes
    -----
    The threshold is the smallest bin threshold ``t`` with ``#{healthy >= t} <= (1 - q) N``: it
    never flags more than ``1 - q`` of the healthy voxels (the guarantee that matters); when
    bins are mixed it may be up to one bin above the exact empirical quantile.

    Examples
    --------
    >>> import numpy as np
    >>> healthy = VoxelAccumulator()
    >>> healthy.update(np.arange(8, dtype=np.float32).reshape(2, 2, 2), None)
    >>> healthy_quantile_threshold(healthy, q=0.75).value   # flags 2 of 8 voxels
    6.0
    """
    if not isinstance(q, (int, float)) or isinstance(q, bool) or not 0.0 < q < 1.0:
        raise ValueError(f"q must be a float in (0, 1), e.g. 0.995; got {q!r}")
    hist = _histogram(validation)
    neg, _, thresholds, _ = _descending(hist)
    keep = neg > 0
    neg, thresholds = neg[keep], thresholds[keep]
    n_neg = neg.sum()
    if n_neg == 0:
        raise UndefinedMetricError(
            "healthy-quantile threshold needs healthy (label 0) validation voxels; got none; "
            "update the validation accumulator with healthy scans (labels=None) or brain masks"
        )
    flagged = np.cumsum(neg)
    ok = np.flatnonzero(flagged <= (1.0 - q) * n_neg)
    if ok.size == 0:  # even the top bin holds more than 1 - q: flag nothing, just above the maximum
        value = float(np.nextafter(keys_to_floats(np.uint32(hist.key_max)), np.float32(np.inf)))
        return Threshold(value, "healthy-quantile", None, float(q), 0.0, int(n_neg))
    last = int(ok[-1])
    return Threshold(float(thresholds[last]), "healthy-quantile", None, float(q),
                     float(flagged[last] / n_neg), int(hist.n_positive + n_neg))


def choose_threshold(
    validation: VoxelAccumulator | ScoreHistogram, *, protocol: str = "best-dice", q: float = 0.995
) -> Threshold:
    """Choose a voxel threshold from validation data only (no test argument exists).

    Parameters
    ----------
    validation : VoxelAccumulator or ScoreHistogram
        Validation voxels (with labels for ``"best-dice"``; healthy voxels for the quantile).
    protocol : {"best-dice", "healthy-quantile"}, default "best-dice"
        ``"best-dice"``: maximise pooled validation Dice [1]_. ``"healthy-quantile"``: the
        ``q``-quantile of healthy validation scores.
    q : float, default 0.995
        Quantile of the ``"healthy-quantile"`` protocol.

    Returns
    -------
    Threshold

    Examples
    --------
    >>> import numpy as np
    >>> val = VoxelAccumulator()
    >>> val.update(np.arange(8, dtype=np.float32).reshape(2, 2, 2), np.arange(8).reshape(2, 2, 2) >= 6)
    >>> choose_threshold(val, protocol="best-dice").value
    6.0
    """
    check_option(protocol, "protocol", PROTOCOLS)
    if protocol == "best-dice":
        return best_dice_threshold(validation)
    return healthy_quantile_threshold(validation, q=q)


@dataclass(frozen=True)
class DiceResult:
    """Per-volume Dice on test at a label-free threshold: mean ± std over cases."""

    dice_mean_score: float
    dice_std: float
    n_cases: int
    n_skipped: int
    threshold: Threshold
    case_ids: tuple[str, ...] = field(repr=False)
    per_case: tuple[float, ...] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["threshold"] = self.threshold.to_dict()
        return out


def _component_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"min_component_size must be an integer >= 0 (0: off), got {value!r}")
    return int(value)


class DiceAccumulator:
    """Per-volume Dice at a fixed threshold, streamed case by case.

    Parameters
    ----------
    threshold : Threshold
        From :func:`choose_threshold` (validation data only).
    on_undefined : {"raise", "skip"}, default "raise"
        A case with neither tumour nor predicted voxels has no Dice (0/0): raise
        :class:`~brats_ad.errors.UndefinedMetricError`, or leave it out and count it in
        ``n_skipped``.
    min_component_size : int, default 0
        After thresholding, drop connected components (full connectivity) of fewer voxels than
        this from ``A`` (step 3 of Baur et al.'s post-processing; Meissen et al. drop <= 20).
        0 or 1 keeps everything. Components are found within each update, so pass whole volumes.

    Notes
    -----
    Per case: ``Dice = 2 |A ∩ G| / (|A| + |G|)`` with ``A = {score >= t} ∩ mask`` and
    ``G = labels ∩ mask``; updates with the same ``case_id`` (slices) add up first. The result is
    the mean and population standard deviation (``ddof=0``) over cases.

    Examples
    --------
    >>> import numpy as np
    >>> t = Threshold(6.0, "best-dice", 1.0, None, 0.0, 8)
    >>> dice = DiceAccumulator(t)
    >>> scores = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    >>> dice.update(scores, scores >= 5, case_id="a")   # predicts 2 of 3 tumour voxels
    >>> round(dice.compute().dice_mean_score, 4)
    0.8
    """

    def __init__(self, threshold: Threshold, *, on_undefined: str = "raise", min_component_size: int = 0) -> None:
        self.min_component_size = _component_size(min_component_size)
        if not isinstance(threshold, Threshold):
            raise TypeError(
                f"threshold must be a Threshold from choose_threshold(validation); got "
                f"{type(threshold).__name__}; wrap a fixed value as Threshold(value, 'fixed', None, None, nan, 0)"
            )
        self.threshold = threshold
        self.on_undefined = check_option(on_undefined, "on_undefined", ("raise", "skip"))
        self._value = np.float32(threshold.value)
        self._cases: dict[str, list[int]] = {}

    def update(self, scores: Any, labels: Any, *, mask: Any = None, case_id: str | None = None) -> None:
        """Add one volume (or slice of ``case_id``).

        Parameters
        ----------
        scores : array-like of float, shape (*spatial)
        labels : array-like of bool or {0, 1}, shape (*spatial)
        mask : array-like of bool, shape (*spatial), optional
        case_id : str, optional
            Defaults to a new id per update (one update = one volume).
        """
        scores = to_numpy(scores, "scores")
        labels = to_numpy(labels, "labels")
        check_same_shape(scores, labels, "scores", "labels")
        truth = binary_labels(labels)
        flat = scores.reshape(-1)
        if not np.isfinite(flat).all():
            raise ValueError("scores must be finite; got NaN/inf; replace them (np.nan_to_num) or mask them out")
        predicted = flat.astype(np.float32, copy=False) >= self._value
        keep = flat_mask(mask, scores.shape)
        if keep is not None:
            predicted &= keep
            truth = truth & keep
        if self.min_component_size > 1:
            from brats_ad.scorers.postprocess import remove_small_components

            predicted = remove_small_components(predicted.reshape(scores.shape), self.min_component_size,
                                                connectivity=max(scores.ndim, 1)).reshape(-1)
        key = str(case_id) if case_id is not None else f"#{len(self._cases)}"
        tp_a_g = self._cases.setdefault(key, [0, 0, 0])
        tp_a_g[0] += int(np.count_nonzero(predicted & truth))
        tp_a_g[1] += int(np.count_nonzero(predicted))
        tp_a_g[2] += int(np.count_nonzero(truth))

    def compute(self) -> DiceResult:
        """Mean ± std of the per-case Dice values."""
        ids, values, skipped = [], [], 0
        for case_id, (tp, n_pred, n_true) in self._cases.items():
            if n_pred + n_true == 0:
                if self.on_undefined == "raise":
                    raise UndefinedMetricError(
                        f"Dice of case {case_id!r} is undefined: no tumour and no voxel >= "
                        f"{self.threshold.value:g}; pass on_undefined='skip' to leave such cases out"
                    )
                skipped += 1
                continue
            ids.append(case_id)
            values.append(2.0 * tp / (n_pred + n_true))
        if not values:
            raise UndefinedMetricError(
                f"no case has a defined Dice ({skipped} skipped, {len(self._cases)} seen); "
                "evaluate test cases that contain tumour"
            )
        arr = np.asarray(values)
        return DiceResult(float(arr.mean()), float(arr.std()), len(values), skipped, self.threshold,
                          tuple(ids), tuple(values))


def evaluate_at_threshold(
    threshold: Threshold, volumes: Iterable[tuple[Any, ...]], *, on_undefined: str = "raise",
    min_component_size: int = 0,
) -> DiceResult:
    """Per-volume Dice of test ``volumes`` at ``threshold``: the only place test labels enter.

    Parameters
    ----------
    threshold : Threshold
        From :func:`choose_threshold` on validation data.
    volumes : iterable of (scores, labels) or (scores, labels, mask)
        Arrays of one test volume each, shape (*spatial).
    on_undefined : {"raise", "skip"}, default "raise"
    min_component_size : int, default 0
        See :class:`DiceAccumulator`.

    Returns
    -------
    DiceResult

    Examples
    --------
    >>> import numpy as np
    >>> s = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    >>> r = evaluate_at_threshold(Threshold(6.0, "best-dice", 1.0, None, 0.0, 8), [(s, s >= 6), (s, s >= 4)])
    >>> round(r.dice_mean_score, 4), round(r.dice_std, 4)
    (0.8333, 0.1667)
    """
    acc = DiceAccumulator(threshold, on_undefined=on_undefined, min_component_size=min_component_size)
    for item in volumes:
        if len(item) not in (2, 3):
            raise ValueError(f"each volume must be (scores, labels) or (scores, labels, mask); got {len(item)} items")
        acc.update(item[0], item[1], mask=item[2] if len(item) == 3 else None)
    return acc.compute()


@dataclass(frozen=True)
class OracleDice:
    """⌈Dice⌉: the best pooled Dice over all thresholds *on test* (uses test labels; oracle)."""

    oracle_dice_score: float
    oracle_threshold: float
    oracle_dice_error_bound: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def oracle_dice_score(test: VoxelAccumulator | ScoreHistogram, *, on_undefined: str = "raise") -> OracleDice:
    """Oracle best Dice over the whole test set pooled (⌈Dice⌉ of the literature [2]_).

    Parameters
    ----------
    test : VoxelAccumulator or ScoreHistogram
        Test voxels with labels.
    on_undefined : {"raise", "nan"}, default "raise"
        Without tumour voxels: raise, or return NaN.

    Returns
    -------
    OracleDice
        ``oracle_dice_score``, the threshold reaching it and a bound on how much higher the best
        Dice over every distinct score could be (0 when the histogram is exact).

    Notes
    -----
    ``max_t 2 TP(t) / (2 TP(t) + FP(t) + FN(t))`` with TP, FP, FN summed over all test voxels.
    It chooses the threshold with test labels, so it is an upper bound on achievable Dice, not a
    fair score; report it next to the label-free protocols, labelled oracle.

    Examples
    --------
    >>> import numpy as np
    >>> test = VoxelAccumulator()
    >>> s = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    >>> test.update(s, s >= 6)
    >>> oracle_dice_score(test).oracle_dice_score
    1.0
    """
    check_option(on_undefined, "on_undefined", ON_UNDEFINED)
    hist = _histogram(test)
    neg, pos, thresholds, mixed = _descending(hist)
    if pos.sum() == 0:
        nan = undefined(f"oracle Dice is undefined without tumour voxels; got 0 positive of {int(neg.sum())}", on_undefined)
        return OracleDice(nan, nan, 0.0)
    dice = curves.dice_curve(neg, pos)
    best = int(np.argmax(dice))
    return OracleDice(float(dice[best]), float(thresholds[best]),
                      curves.dice_error_bound(neg, pos, mixed, float(dice[best])))


class DiceAtThreshold:
    """Registered metric: per-volume Dice on test at a threshold chosen on validation.

    ``metric.choose(validation) -> Threshold`` then
    ``metric.accumulator(threshold) -> DiceAccumulator`` to stream test volumes; or
    ``metric(validation, test_volumes) -> DiceResult`` in one call.
    """

    level = "voxel"

    def __init__(self, *, protocol: str = "best-dice", q: float = 0.995, on_undefined: str = "raise",
                 min_component_size: int = 0) -> None:
        self.protocol = check_option(protocol, "protocol", PROTOCOLS)
        self.min_component_size = _component_size(min_component_size)
        if not isinstance(q, (int, float)) or isinstance(q, bool) or not 0.0 < q < 1.0:
            raise ValueError(f"q must be a float in (0, 1), e.g. 0.995; got {q!r}")
        self.q = float(q)
        self.on_undefined = check_option(on_undefined, "on_undefined", ("raise", "skip"))

    def choose(self, validation: VoxelAccumulator | ScoreHistogram) -> Threshold:
        return choose_threshold(validation, protocol=self.protocol, q=self.q)

    def accumulator(self, threshold: Threshold) -> DiceAccumulator:
        return DiceAccumulator(threshold, on_undefined=self.on_undefined, min_component_size=self.min_component_size)

    def __call__(self, validation: VoxelAccumulator | ScoreHistogram, test_volumes: Iterable[tuple[Any, ...]]) -> DiceResult:
        return evaluate_at_threshold(self.choose(validation), test_volumes, on_undefined=self.on_undefined,
                                     min_component_size=self.min_component_size)


class OracleDiceMetric:
    """Registered metric ``oracle_dice_score``: ``metric(test_accumulator) -> float`` (oracle)."""

    name = "oracle_dice_score"
    level = "voxel"

    def __init__(self, *, on_undefined: str = "raise") -> None:
        self.on_undefined = check_option(on_undefined, "on_undefined", ON_UNDEFINED)

    def __call__(self, test: VoxelAccumulator | ScoreHistogram) -> float:
        return oracle_dice_score(test, on_undefined=self.on_undefined).oracle_dice_score
