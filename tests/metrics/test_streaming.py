"""ScoreHistogram: order keys, exact regridding, streaming == one shot, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from brats_ad.metrics.streaming import ScoreHistogram, float_keys, keys_to_floats


def _state(h: ScoreHistogram):
    return h.shift, h.lo_bin, h.key_min, h.key_max, h.counts.tolist(), h.mixed.tolist()


def test_keys_preserve_order_and_round_trip():
    values = np.array([-np.finfo(np.float32).max, -1e30, -2.5, -1e-38, -0.0, 0.0, 1e-45, 1e-30, 1.0, 3.0e38],
                      dtype=np.float32)
    keys = float_keys(values)
    assert np.all(np.diff(keys.astype(np.int64)) >= 0)
    assert keys[4] == keys[5]  # -0.0 == 0.0 is a tie, not two values
    back = keys_to_floats(keys)
    np.testing.assert_array_equal(back, values + np.float32(0))


def test_keys_order_matches_float_order_on_random_values():
    rng = np.random.default_rng(3)
    values = (rng.standard_normal(5000) * 10.0 ** rng.integers(-30, 30, 5000)).astype(np.float32)
    order_keys = np.argsort(float_keys(values), kind="stable")
    order_vals = np.argsort(values, kind="stable")
    np.testing.assert_array_equal(values[order_keys], values[order_vals])


@pytest.mark.parametrize("bins_log2", [6, 12, 16])
def test_streaming_equals_one_shot_bit_for_bit(bins_log2):
    rng = np.random.default_rng(bins_log2)
    scores = np.concatenate([rng.random(3000), -50 * rng.random(1000), 1e6 * rng.random(50)])
    labels = rng.random(scores.size) < 0.2
    one = ScoreHistogram(bins_log2=bins_log2)
    one.update(scores, labels)
    many = ScoreHistogram(bins_log2=bins_log2)
    order = rng.permutation(scores.size)  # widest range arrives last in some chunks
    for chunk in np.array_split(order, 17):
        many.update(scores[chunk], labels[chunk])
    assert _state(many) == _state(one)


def test_merge_of_parts_equals_whole():
    rng = np.random.default_rng(0)
    scores, labels = rng.standard_normal(4000) * 1e3, rng.random(4000) < 0.3
    whole = ScoreHistogram(bins_log2=10)
    whole.update(scores, labels)
    parts = [ScoreHistogram(bins_log2=10) for _ in range(3)]
    for part, chunk in zip(parts, np.array_split(np.arange(4000), 3)):
        part.update(scores[chunk], labels[chunk])
    merged = parts[0].copy().merge(parts[1]).merge(parts[2])
    assert _state(merged) == _state(whole)


def test_memory_is_bounded_by_capacity_and_counts_are_kept():
    rng = np.random.default_rng(1)
    h = ScoreHistogram(bins_log2=8)
    for _ in range(20):
        h.update(rng.standard_normal(1000) * 10.0 ** rng.integers(-20, 20), rng.random(1000) < 0.5)
    assert len(h.counts) <= 256
    assert h.n_negative + h.n_positive == 20_000
    assert h.nbytes <= 256 * 24


def test_exact_when_few_distinct_values_even_with_wide_bins():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 256, 10_000).astype(np.float32)  # uint8-quantised
    scores[0] = 1e6  # one outlier makes bins 2**15 keys wide, still one integer per bin
    h = ScoreHistogram(bins_log2=16)
    h.update(scores, rng.random(10_000) < 0.1)
    assert h.shift > 0 and h.exact


def test_mixed_bins_are_detected():
    h = ScoreHistogram(bins_log2=4)
    h.update(np.linspace(0, 1, 1000), np.zeros(1000))
    assert not h.exact and h.mixed.any()


def test_thresholds_split_bins_exactly():
    rng = np.random.default_rng(4)
    scores = rng.standard_normal(2000).astype(np.float32)
    h = ScoreHistogram(bins_log2=6)
    h.update(scores, None)
    cum_from_top = np.cumsum(h.counts[::-1, 0])[::-1]
    for i in np.flatnonzero(h.counts.any(1)):
        assert np.count_nonzero(scores >= h.thresholds()[i]) == cum_from_top[i]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])
def test_non_finite_scores_are_rejected(bad):
    h = ScoreHistogram()
    with pytest.raises(ValueError, match="finite float32 .* got 1 NaN/inf"):
        h.update(np.array([0.0, 1.0, bad]), np.array([0, 1, 0]))


def test_mask_and_shape_checks():
    h = ScoreHistogram()
    with pytest.raises(ValueError, match=r"equal shapes; got scores \(2, 2\) and labels \(4,\)"):
        h.update(np.zeros((2, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="mask must have the scores' shape"):
        h.update(np.zeros((2, 2)), np.zeros((2, 2)), mask=np.ones(3, bool))
    h.update(np.arange(4.0).reshape(2, 2), np.array([[0, 1], [0, 1]]), mask=np.array([[True, False], [True, True]]))
    assert (h.n_negative, h.n_positive) == (2, 1)


@pytest.mark.parametrize("bins_log2", [3, 27, 2.5, True])
def test_bins_log2_is_checked(bins_log2):
    with pytest.raises(ValueError, match=r"bins_log2 must be an integer in \[4, 26\]"):
        ScoreHistogram(bins_log2=bins_log2)
