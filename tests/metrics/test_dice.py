"""Dice protocols: thresholds from validation only, per-volume Dice on test, oracle ⌈Dice⌉."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from brats_ad.errors import UndefinedMetricError
from brats_ad.metrics.dice import (
    DiceAccumulator,
    DiceAtThreshold,
    Threshold,
    best_dice_threshold,
    choose_threshold,
    evaluate_at_threshold,
    healthy_quantile_threshold,
    oracle_dice_score,
)
from brats_ad.metrics.voxel import VoxelAccumulator


def _cases(seed: int, n_cases: int = 6, shape=(8, 8, 8)):
    """Toy volumes with a planted cubic lesion scoring higher than background."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_cases):
        labels = np.zeros(shape, bool)
        x, y, z = rng.integers(0, 4, 3)
        labels[x : x + 4, y : y + 4, z : z + 3] = True
        scores = (rng.random(shape) + 0.6 * labels).astype(np.float32)
        out.append((scores, labels))
    return out


def _accumulate(cases) -> VoxelAccumulator:
    acc = VoxelAccumulator()
    for i, (scores, labels) in enumerate(cases):
        acc.update(scores, labels, case_id=str(i))
    return acc


def _pooled_dice(cases, t):
    tp = sum(np.count_nonzero((s >= t) & l) for s, l in cases)
    pred = sum(np.count_nonzero(s >= t) for s, l in cases)
    true = sum(np.count_nonzero(l) for s, l in cases)
    return 2 * tp / (pred + true)


def test_best_dice_threshold_matches_brute_force_over_all_scores():
    cases = _cases(0)
    threshold = best_dice_threshold(_accumulate(cases))
    every = np.unique(np.concatenate([s.ravel() for s, _ in cases]))
    brute = max(_pooled_dice(cases, t) for t in every)
    assert threshold.protocol == "best-dice"
    assert threshold.validation_dice == pytest.approx(brute)
    assert _pooled_dice(cases, threshold.value) == pytest.approx(brute)


def test_healthy_quantile_flags_at_most_one_minus_q():
    rng = np.random.default_rng(1)
    healthy = VoxelAccumulator()
    volumes = [rng.gamma(2.0, size=(16, 16, 16)).astype(np.float32) for _ in range(4)]
    for v in volumes:
        healthy.update(v, None)  # healthy scans: every voxel label 0
    everything = np.concatenate([v.ravel() for v in volumes])
    for q in (0.9, 0.99, 0.995):
        t = healthy_quantile_threshold(healthy, q=q)
        flagged = np.mean(everything >= t.value)
        assert flagged <= 1 - q + 1e-12
        assert t.healthy_fpr == pytest.approx(flagged)
        desc = np.sort(everything)[::-1]
        brute = desc[int(np.floor((1 - q) * everything.size)) - 1]  # smallest score flagging <= (1-q) N
        assert t.value == pytest.approx(brute, rel=1e-4)


def test_threshold_never_reads_test_labels():
    validation = _accumulate(_cases(2))
    test = _cases(3)
    garbage = [(s, np.random.default_rng(0).permutation(l.ravel()).reshape(l.shape)) for s, l in test]
    for protocol in ("best-dice", "healthy-quantile"):
        metric = DiceAtThreshold(protocol=protocol)
        t_true = metric.choose(validation)
        t_garbage = metric.choose(validation)
        assert t_true == t_garbage
        r_true, r_garbage = metric(validation, test), metric(validation, garbage)
        assert r_true.threshold == r_garbage.threshold == t_true  # same threshold, different Dice
        assert r_true.dice_mean_score > r_garbage.dice_mean_score


def test_threshold_functions_have_no_test_argument():
    for function in (choose_threshold, best_dice_threshold, healthy_quantile_threshold, DiceAtThreshold.choose):
        names = [p for p in inspect.signature(function).parameters if p != "self"]
        assert names[0] == "validation"
        assert not any("test" in name or "label" in name for name in names)


def test_evaluate_at_threshold_per_volume_mean_and_std():
    cases = _cases(4)
    t = Threshold(0.8, "best-dice", None, None, 0.0, 0)
    result = evaluate_at_threshold(t, cases)
    expected = [2 * np.count_nonzero((s >= 0.8) & l) / (np.count_nonzero(s >= 0.8) + l.sum()) for s, l in cases]
    assert result.per_case == pytest.approx(expected)
    assert result.dice_mean_score == pytest.approx(np.mean(expected))
    assert result.dice_std == pytest.approx(np.std(expected))
    assert result.n_cases == 6 and result.n_skipped == 0


def test_slices_of_one_case_add_up_before_dice():
    scores, labels = _cases(5, n_cases=1)[0]
    t = Threshold(0.9, "best-dice", None, None, 0.0, 0)
    whole = DiceAccumulator(t)
    whole.update(scores, labels, case_id="p1")
    sliced = DiceAccumulator(t)
    for z in range(scores.shape[-1]):
        sliced.update(scores[..., z], labels[..., z], case_id="p1")
    assert sliced.compute().per_case == whole.compute().per_case


def test_empty_case_raises_or_is_skipped():
    t = Threshold(5.0, "best-dice", None, None, 0.0, 0)
    empty = (np.zeros((2, 2, 2), np.float32), np.zeros((2, 2, 2), bool))
    good = (np.full((2, 2, 2), 6.0, np.float32), np.ones((2, 2, 2), bool))
    with pytest.raises(UndefinedMetricError, match="case '#0' is undefined.*on_undefined='skip'"):
        evaluate_at_threshold(t, [empty, good])
    result = evaluate_at_threshold(t, [empty, good], on_undefined="skip")
    assert (result.n_cases, result.n_skipped, result.dice_mean_score) == (1, 1, 1.0)


def test_oracle_dice_matches_brute_force_and_is_labelled_oracle():
    cases = _cases(6)
    oracle = oracle_dice_score(_accumulate(cases))
    every = np.unique(np.concatenate([s.ravel() for s, _ in cases]))
    assert oracle.oracle_dice_score == pytest.approx(max(_pooled_dice(cases, t) for t in every))
    assert oracle.oracle_dice_error_bound == 0.0
    assert set(oracle.to_dict()) == {"oracle_dice_score", "oracle_threshold", "oracle_dice_error_bound"}


def test_oracle_is_at_least_the_label_free_dice_pooled():
    validation, test = _cases(7), _cases(8)
    t = choose_threshold(_accumulate(validation))
    assert oracle_dice_score(_accumulate(test)).oracle_dice_score >= _pooled_dice(test, t.value) - 1e-12


def test_undefined_and_bad_options():
    healthy_only = VoxelAccumulator()
    healthy_only.update(np.arange(8.0), None)
    with pytest.raises(UndefinedMetricError, match="best-Dice threshold needs tumour voxels.*healthy-quantile"):
        choose_threshold(healthy_only)
    with pytest.raises(UndefinedMetricError, match="oracle Dice is undefined"):
        oracle_dice_score(healthy_only)
    assert np.isnan(oracle_dice_score(healthy_only, on_undefined="nan").oracle_dice_score)
    with pytest.raises(ValueError, match="protocol must be one of 'best-dice', 'healthy-quantile'"):
        choose_threshold(healthy_only, protocol="otsu")
    with pytest.raises(ValueError, match=r"q must be a float in \(0, 1\)"):
        healthy_quantile_threshold(healthy_only, q=99.5)
    with pytest.raises(TypeError, match="threshold must be a Threshold"):
        DiceAccumulator(0.5)


def test_quantile_above_every_score_flags_nothing():
    acc = VoxelAccumulator()
    acc.update(np.array([1.0, 1.0, 1.0, 2.0]), None)
    t = healthy_quantile_threshold(acc, q=0.9)  # 10% of 4 voxels < one voxel
    assert t.value > 2.0 and t.healthy_fpr == 0.0


def test_min_component_size_drops_small_predicted_components_before_dice():
    """Baur's step 3 / Meissen's filter: specks above the threshold stop counting as predicted."""
    from scipy import ndimage

    rng = np.random.default_rng(4)
    labels = np.zeros((20, 20, 12), bool)
    labels[5:12, 6:13, 3:9] = True
    scores = rng.normal(0, 0.2, labels.shape).astype(np.float32)
    scores[labels] += 2.0
    scores[1, 1, 1] = scores[18, 2, 10] = scores[2, 17, 5] = 3.0  # isolated false positives
    t = Threshold(1.0, "best-dice", None, None, 0.0, 0)

    def dice(min_size):
        acc = DiceAccumulator(t, min_component_size=min_size)
        acc.update(scores, labels, case_id="a")
        return acc.compute().dice_mean_score

    predicted = scores >= 1.0
    lab, _ = ndimage.label(predicted, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(lab.ravel())
    kept = predicted & (sizes[lab] >= 5)
    expected = 2 * (kept & labels).sum() / (kept.sum() + labels.sum())
    assert dice(5) == pytest.approx(expected) and dice(5) > dice(0)
    assert dice(1) == dice(0)  # 0 and 1 keep everything
    with pytest.raises(ValueError, match="min_component_size"):
        DiceAccumulator(t, min_component_size=-1)
