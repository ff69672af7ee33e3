"""Voxel AUROC / AUPRC against scikit-learn and a brute-force pairwise AUROC."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from brats_ad.errors import UndefinedMetricError
from brats_ad.metrics.voxel import VoxelAccumulator, VoxelAUPRC, VoxelAUROC, voxel_auprc_score, voxel_auroc_score


def brute_force_auroc(labels, scores) -> float:
    """P(pos > neg) + P(pos == neg) / 2 over every (positive, negative) pair; slow on purpose."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def _accumulate(scores, labels, chunks=1, **kwargs) -> VoxelAccumulator:
    acc = VoxelAccumulator(**kwargs)
    for part in np.array_split(np.arange(scores.size), chunks):
        acc.update(scores[part], labels[part])
    return acc


def _scores(kind: str, rng, n: int, labels) -> np.ndarray:
    if kind == "continuous":
        return rng.standard_normal(n) + 1.2 * labels
    if kind == "uint8":  # heavily tied
        return np.round(np.clip(0.6 * rng.random(n) + 0.35 * labels, 0, 1) * 255) / 255
    if kind == "heavy-tailed":
        return np.exp(3 * rng.standard_normal(n) + labels)
    if kind == "negative-huge":
        return -1e20 * rng.random(n) + 1e19 * labels
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["continuous", "uint8", "heavy-tailed", "negative-huge"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_on_random_data(kind, seed):
    rng = np.random.default_rng(seed)
    n = 30_000
    labels = rng.random(n) < 0.05
    scores = _scores(kind, rng, n, labels)
    result = _accumulate(scores, labels, chunks=5).compute()
    assert result.auroc_score == pytest.approx(roc_auc_score(labels, scores), abs=1e-4)
    assert result.auprc_score == pytest.approx(average_precision_score(labels, scores), abs=1e-3)


def test_matches_sklearn_on_a_million_voxels():
    rng = np.random.default_rng(7)
    n = 1_000_000
    labels = rng.random(n) < 0.02
    scores = (rng.random(n) + 0.3 * labels).astype(np.float32)
    result = _accumulate(scores, labels, chunks=4).compute()
    assert abs(result.auroc_score - roc_auc_score(labels, scores)) <= max(result.auroc_error_bound, 1e-12)
    assert abs(result.auprc_score - average_precision_score(labels, scores)) <= max(result.auprc_error_bound, 1e-12)
    assert result.auroc_error_bound < 1e-4 and result.auprc_error_bound < 1e-3


@pytest.mark.parametrize("bins_log2", [4, 6, 8])
def test_certified_bounds_hold_when_bins_are_coarse(bins_log2):
    rng = np.random.default_rng(bins_log2)
    labels = rng.random(5000) < 0.3
    scores = (rng.standard_normal(5000) + labels).astype(np.float32)
    result = _accumulate(scores, labels, bins_log2=bins_log2).compute()
    assert not result.exact
    assert abs(result.auroc_score - roc_auc_score(labels, scores)) <= result.auroc_error_bound + 1e-12
    assert abs(result.auprc_score - average_precision_score(labels, scores)) <= result.auprc_error_bound + 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_brute_force_pairwise_auroc_on_tiny_inputs(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(12) < 0.4
    labels[:2] = [True, False]
    scores = rng.integers(0, 4, 12).astype(float)  # many ties
    assert voxel_auroc_score(labels, scores) == pytest.approx(brute_force_auroc(labels, scores), abs=1e-12)


def test_exact_results_equal_sklearn_to_rounding_with_ties():
    rng = np.random.default_rng(5)
    labels = rng.random(50_000) < 0.1
    scores = rng.integers(0, 256, 50_000).astype(np.uint8)  # uint8 anomaly map
    result = _accumulate(scores, labels, chunks=3).compute()
    assert result.exact and result.auroc_error_bound == 0.0
    assert result.auroc_score == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert result.auprc_score == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_average_precision_is_step_wise_not_trapezoid():
    # Hand-computed: thresholds 0.9 (tp 1, fp 1), 0.5 (tp 2, fp 3): AP = 1/2 * 1/2 + 1/2 * 2/5 = 0.45
    labels = np.array([1, 0, 1, 0, 0], bool)
    scores = np.array([0.9, 0.9, 0.5, 0.5, 0.5])
    ap = voxel_auprc_score(labels, scores)
    assert ap == pytest.approx(0.45) == pytest.approx(average_precision_score(labels, scores))
    # The trapezoid under the same PR points (from (0, 1)) would be larger: 0.5 * (1 + 0.5) / 2 + ...
    trapezoid = 0.5 * (1.0 + 0.5) / 2 + 0.5 * (0.5 + 0.4) / 2
    assert abs(ap - trapezoid) > 0.1


def test_constant_scores():
    labels = np.array([0, 1, 0, 0, 1, 0, 0, 0], bool)
    scores = np.full(8, 3.25)
    assert voxel_auroc_score(labels, scores) == 0.5
    assert voxel_auprc_score(labels, scores) == pytest.approx(0.25)  # the prevalence


@pytest.mark.parametrize("labels,missing", [(np.zeros(6, bool), "positive"), (np.ones(6, bool), "negative")])
def test_one_class_raises_or_gives_nan(labels, missing):
    scores = np.arange(6.0)
    with pytest.raises(UndefinedMetricError, match=f"undefined without a {missing}.*on_undefined='nan'"):
        voxel_auroc_score(labels, scores)
    assert np.isnan(voxel_auroc_score(labels, scores, on_undefined="nan"))
    if missing == "negative":
        assert voxel_auprc_score(labels, scores) == 1.0  # AP is defined with positives only


def test_no_voxel_at_all_is_undefined():
    with pytest.raises(UndefinedMetricError, match="0 positive and 0 negative"):
        VoxelAccumulator().compute()


def test_mask_selects_brain_voxels():
    rng = np.random.default_rng(0)
    scores = rng.random((6, 6, 6))
    labels = rng.random((6, 6, 6)) < 0.3
    mask = rng.random((6, 6, 6)) < 0.6
    assert voxel_auroc_score(labels, scores, mask=mask) == pytest.approx(roc_auc_score(labels[mask], scores[mask]))


def test_input_checks_say_what_to_do():
    with pytest.raises(ValueError, match=r"binary \(0/1 or bool\); got other values \[2, 4\]; pass seg > 0"):
        voxel_auroc_score(np.array([0, 1, 2, 4]), np.arange(4.0))
    with pytest.raises(ValueError, match="equal shapes"):
        voxel_auroc_score(np.zeros((2, 2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="on_undefined must be one of"):
        voxel_auroc_score(np.array([0, 1]), np.arange(2.0), on_undefined="skip")


def test_torch_tensors_are_accepted():
    import torch
    scores = torch.rand(2, 4, 4)
    labels = scores > 0.7
    labels[0, 0, 0] = False
    assert voxel_auroc_score(labels, scores) == pytest.approx(roc_auc_score(labels.numpy().ravel(), scores.numpy().ravel()))


def test_case_histograms_sum_to_the_pooled_counts():
    rng = np.random.default_rng(3)
    acc = VoxelAccumulator(case_bins_log2=8)
    for case in range(5):
        for _ in range(2):  # two slices / patches of the same case
            acc.update(rng.standard_normal(500) * 10 ** case, rng.random(500) < 0.2, case_id=f"c{case}")
    assert sorted(acc.case_histograms) == [f"c{i}" for i in range(5)]
    assert sum(h.n_positive for h in acc.case_histograms.values()) == acc.histogram.n_positive
    assert sum(h.n_negative for h in acc.case_histograms.values()) == 5000 - acc.histogram.n_positive
    assert all(len(h.counts) <= 256 for h in acc.case_histograms.values())


def test_merge_of_workers_equals_single_accumulator():
    rng = np.random.default_rng(9)
    scores, labels = rng.random(6000), rng.random(6000) < 0.1
    single = _accumulate(scores, labels)
    a, b = _accumulate(scores[:2500], labels[:2500]), _accumulate(scores[2500:], labels[2500:])
    assert a.merge(b).compute() == single.compute()


def test_registered_metric_objects():
    acc = _accumulate(np.arange(8.0), np.arange(8) >= 6)
    assert VoxelAUROC()(acc) == 1.0 and VoxelAUPRC()(acc) == 1.0
    assert VoxelAUROC.name == "voxel_auroc_score" and VoxelAUPRC.name == "voxel_auprc_score"
