"""Patient bootstrap: seeded determinism, sane coverage, replicates from per-case histograms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from brats_ad.errors import UndefinedMetricError
from brats_ad.metrics.bootstrap import (
    bootstrap_mean_ci,
    bootstrap_sample_ci,
    bootstrap_voxel_ci,
    case_weights,
)
from brats_ad.metrics.voxel import VoxelAccumulator


def _test_set(seed: int, n_cases: int = 20, n_neg: int = 150, n_pos: int = 15, shift: float = 1.0) -> VoxelAccumulator:
    rng = np.random.default_rng(seed)
    acc = VoxelAccumulator(bins_log2=12, case_bins_log2=10)
    for case in range(n_cases):
        labels = np.r_[np.zeros(n_neg, bool), np.ones(n_pos, bool)]
        scores = rng.standard_normal(labels.size) + shift * labels
        acc.update(scores, labels, case_id=f"case{case:03d}")
    return acc


def test_case_weights_resample_with_replacement():
    w = case_weights(7, n_boot=50, seed=0)
    assert w.shape == (50, 7) and np.all(w.sum(1) == 7) and np.all(w >= 0)
    np.testing.assert_array_equal(w, case_weights(7, n_boot=50, seed=0))


@pytest.mark.parametrize("metric", ["auroc", "auprc", "oracle_dice"])
def test_seeded_and_contains_point_estimate(metric):
    acc = _test_set(0)
    a = bootstrap_voxel_ci(acc, metric=metric, n_boot=200, seed=1)
    b = bootstrap_voxel_ci(acc, metric=metric, n_boot=200, seed=1)
    c = bootstrap_voxel_ci(acc, metric=metric, n_boot=200, seed=2)
    assert a == b and (a.low, a.high) != (c.low, c.high)
    result = acc.compute()
    point = {"auroc": result.auroc_score, "auprc": result.auprc_score, "oracle_dice": None}[metric]
    if point is not None:
        assert a.low < point < a.high
    assert 0.0 <= a.low < a.high <= 1.0 and a.level == 0.95 and a.n_undefined == 0


def test_voxel_auroc_coverage_is_sane():
    true_auroc = norm.cdf(1.0 / np.sqrt(2.0))  # positives N(1, 1) against negatives N(0, 1)
    trials = 40
    covered = sum(
        lo <= true_auroc <= hi
        for lo, hi in (bootstrap_voxel_ci(_test_set(100 + t), n_boot=200, seed=t) for t in range(trials))
    )
    assert 0.8 * trials <= covered <= trials  # nominal 95%; a broken bootstrap lands far off


def test_mean_ci_coverage_is_sane():
    rng = np.random.default_rng(0)
    covered = 0
    for t in range(100):
        values = rng.normal(0.7, 0.1, 30)
        lo, hi = bootstrap_mean_ci(values, n_boot=300, seed=t)
        covered += lo <= 0.7 <= hi
    assert 85 <= covered <= 100


def test_sample_ci_resamples_patients():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(15), 10)  # 10 slices per patient
    y = rng.random(150) < 0.4
    s = rng.standard_normal(150) + y
    a = bootstrap_sample_ci(y, s, groups, n_boot=100, seed=0)
    assert a == bootstrap_sample_ci(y, s, groups, n_boot=100, seed=0)
    assert a.low < 0.76 < a.high
    ap = bootstrap_sample_ci(y, s, groups, metric="auprc", n_boot=100, seed=0)
    assert 0.0 < ap.low < ap.high <= 1.0


def test_undefined_replicates_are_counted_not_averaged():
    acc = VoxelAccumulator()
    rng = np.random.default_rng(0)
    acc.update(rng.random(50), np.zeros(50, bool), case_id="healthy")
    acc.update(rng.random(50) + 0.5, np.ones(50, bool), case_id="tumour-only")
    ci = bootstrap_voxel_ci(acc, n_boot=200, seed=0)
    assert 0 < ci.n_undefined < 200  # replicates drawing one case twice have one class


def test_errors():
    with pytest.raises(UndefinedMetricError, match="case_id"):
        bootstrap_voxel_ci(VoxelAccumulator())
    with pytest.raises(ValueError, match="metric must be one of"):
        bootstrap_voxel_ci(_test_set(0, n_cases=2), metric="dice")
    with pytest.raises(ValueError, match="level must be in"):
        bootstrap_mean_ci([1.0, 2.0], level=95)
    with pytest.raises(ValueError, match="n_boot must be a positive integer"):
        bootstrap_mean_ci([1.0, 2.0], n_boot=0)
