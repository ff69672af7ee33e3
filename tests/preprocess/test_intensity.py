import warnings

import numpy as np
import pytest

from brats_ad.data.scan import Scan
from brats_ad.errors import ConfigError
from brats_ad.preprocess.intensity import MedianScale, PercentileScale, ZScore


@pytest.fixture
def scan():
    rng = np.random.default_rng(0)
    image = np.zeros((2, 12, 12, 12), np.float32)
    image[:, 2:10, 2:10, 2:10] = rng.normal([[[[100.0]]], [[[5.0]]]], [[[[20.0]]], [[[1.0]]]], (2, 8, 8, 8))
    image[:, 2:10, 2:10, 2:10] = np.abs(image[:, 2:10, 2:10, 2:10]) + 1  # strictly > 0 in brain
    return Scan("c", image, ("t1", "flair"), np.eye(4))


def test_zscore_mean0_std1_in_brain(scan):
    out = ZScore()(scan)
    brain = out.brain_mask
    assert brain.sum() == 8**3
    for channel in out.image:
        assert abs(channel[brain].mean()) < 1e-5 and abs(channel[brain].std() - 1) < 1e-4
        assert np.all(channel[~brain] == 0.0)


def test_percentile_scale_range_and_background(scan):
    out = PercentileScale(lower=1, upper=99)(scan)
    brain = out.brain_mask
    for channel in out.image:
        assert channel[brain].min() == pytest.approx(-1.0) and channel[brain].max() == pytest.approx(1.0)
        assert np.all(channel[~brain] == -1.0)
    # the mask is kept, so a later step still knows the brain although the background is -1
    assert out.meta["steps"][-1]["name"] == "percentile-scale"


def test_median_scale_linear_part_maps_zero_median_and_multiples(scan):
    out = MedianScale(scale=4.0)(scan)
    brain = out.brain_mask
    for c, channel in enumerate(out.image):
        median = np.median(scan.image[c][brain])
        assert np.median(channel[brain]) == pytest.approx(-0.5, abs=1e-5)  # 2 / 4 - 1
        np.testing.assert_allclose(channel[brain], scan.image[c][brain] / (2 * median) - 1, rtol=1e-5, atol=1e-6)
        assert np.all(channel[~brain] == -1.0)  # zero signal and background meet at -1
    bright = scan.image.copy()
    bright[1, 5, 5, 5] = 50 * np.median(scan.image[1][brain])  # far above: kept, not clipped
    out = MedianScale()(Scan("c", bright, scan.modalities, np.eye(4), brain_mask=brain))
    ratio = bright[1, 5, 5, 5] / np.median(bright[1][brain])  # ~50 (the spike moved the median a little)
    assert out.image[1, 5, 5, 5] == pytest.approx(ratio - 1, rel=1e-5)


def test_median_scale_centres_the_median_and_compresses_only_above_the_knee(scan):
    brain = scan.image.any(axis=0)
    linear = MedianScale()(scan).image  # the default: scale 2, no compression
    out = MedianScale(compress=True, knee=0.5)(scan).image
    for c in range(2):
        lin, got = linear[c][brain], out[c][brain]
        np.testing.assert_allclose(lin, scan.image[c][brain] / np.median(scan.image[c][brain]) - 1, rtol=1e-5, atol=1e-6)
        below = lin <= 0.5
        np.testing.assert_array_equal(got[below], lin[below])  # identity up to the knee
        assert np.all(got < 1.0)
        order = np.argsort(lin, kind="stable")  # strictly increasing: the same ranking
        assert np.all(np.diff(got[order]) >= 0) and np.array_equal(np.argsort(got, kind="stable"), order)
    v = np.array([0.5, 0.5001, 1.0, 2.8, 10.0], np.float32)
    from brats_ad.preprocess.intensity import compress_above

    compress_above(v, 0.5)
    assert v[0] == 0.5 and abs(v[1] - 0.5001) < 1e-6 and np.all(np.diff(v) > 0) and v[-1] <= 1.0  # slope 1 at the knee


def test_median_scale_compress_keeps_real_t2_within_a_tanh_range(shared_data):
    """On the real BraTS case 11.6 % of the T2 brain lies above twice its median (CSF)."""
    from brats_ad.data.brats import BratsDataset
    from brats_ad.data.loading import load_case

    scan = load_case(BratsDataset(shared_data / "real_brats2023_met").cases()[0], ("t2",))
    linear = MedianScale()(scan).image[0][scan.brain_mask]
    out = MedianScale(compress=True)(scan).image[0][scan.brain_mask]
    assert (linear > 1).mean() > 0.05
    assert out.max() < 1.0 and np.array_equal(np.argsort(out, kind="stable"), np.argsort(linear, kind="stable"))


def test_median_scale_keeps_healthy_tissue_where_it_was_when_a_tumour_appears():
    """The reason it is the default: one threshold must fit every volume of a pooled benchmark.

    The same healthy brain with and without a bright tumour (15 % of the brain, 3x the tissue
    level): median scaling moves the healthy voxels by a few hundredths, percentile scaling
    (its top percentile now inside the tumour) squeezes them by a large fraction of the range.
    """
    rng = np.random.default_rng(1)
    healthy = np.zeros((1, 20, 20, 20), np.float32)
    healthy[0, 2:18, 2:18, 2:18] = rng.normal(500, 60, (16, 16, 16)).clip(50)
    with_tumour = healthy.copy()
    tumour = np.zeros(healthy.shape[1:], bool)
    tumour[2:18, 2:18, 2:5] = True  # 3 of the brain's 16 slabs: ~19 %
    with_tumour[0][tumour] = rng.normal(1500, 100, int(tumour.sum()))
    brain = healthy[0] > 0
    frac = tumour[brain].mean()
    assert 0.1 < frac < 0.25
    kept = brain & ~tumour

    def shift(step):
        a = step(Scan("a", healthy, ("flair",), np.eye(4))).image[0][kept]
        b = step(Scan("b", with_tumour, ("flair",), np.eye(4))).image[0][kept]
        return float(np.abs(a - b).mean()), float(a.max() - a.min())

    median_shift, median_range = shift(MedianScale())
    pct_shift, pct_range = shift(PercentileScale())
    assert median_shift < 0.05 * median_range
    assert pct_shift > 0.25 * pct_range


@pytest.mark.parametrize("scale", [0.0, -2.0, float("nan")])
def test_median_scale_rejects_bad_scale(scale):
    with pytest.raises(ConfigError, match="median-scale: scale"):
        MedianScale(scale=scale)


def test_median_scale_warns_on_a_non_positive_median():
    image = np.zeros((1, 4, 4, 4), np.float32)
    image[0, :2] = -5.0  # brain (non-zero) voxels, all negative: no usable scale
    with pytest.warns(RuntimeWarning, match="case 'c'.*median-scale.*brain median -5"):
        out = MedianScale()(Scan("c", image, ("t1",), np.eye(4)))
    assert np.all(out.image[0][out.brain_mask] == 0.0)


STEPS = [ZScore(), PercentileScale(), MedianScale(), MedianScale(compress=True, knee=0.2)]
STEP_IDS = ["zscore", "percentile-scale", "median-scale", "median-scale-compress"]


@pytest.mark.parametrize(
    "step, value",
    [(ZScore(), 0.0), (ZScore(), 7.0), (PercentileScale(), 0.0), (PercentileScale(), 7.0), (MedianScale(), 0.0)],
    ids=["zscore-all-zero", "zscore-constant", "percentile-scale-all-zero", "percentile-scale-constant",
         "median-scale-all-zero"],
)
def test_constant_volume_gives_zeros_and_a_warning_never_nan(step, value):
    image = np.full((1, 4, 4, 4), value, np.float32)
    with pytest.warns(RuntimeWarning, match="case 'c'.*t1"):
        out = step(Scan("c", image, ("t1",), np.eye(4)))
    assert np.all(np.isfinite(out.image))
    assert np.all(out.image[0][out.brain_mask] == 0.0)


def test_median_scale_maps_a_constant_positive_channel_to_the_median_level():
    """A constant channel has a median, so unlike the spread-based steps nothing is undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = MedianScale(scale=4.0)(Scan("c", np.full((1, 4, 4, 4), 7.0, np.float32), ("t1",), np.eye(4)))
    np.testing.assert_allclose(out.image, -0.5)


def test_non_constant_volume_does_not_warn(scan):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ZScore()(scan)
        PercentileScale()(scan)
        MedianScale()(scan)


@pytest.mark.parametrize("lower, upper", [(50, 50), (-1, 99), (10, 101), (90, 10)])
def test_percentile_scale_rejects_bad_percentiles(lower, upper):
    with pytest.raises(ConfigError, match="lower < upper"):
        PercentileScale(lower=lower, upper=upper)


@pytest.mark.parametrize("kind", ["int", "float"])
def test_brain_percentiles_equal_numpy_bit_for_bit(kind):
    from brats_ad.preprocess.intensity import brain_percentiles

    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(1, 3000))
        values = rng.integers(-40, int(rng.integers(1, 2000)), n).astype(np.float32)
        if kind == "float":
            values += rng.random(n).astype(np.float32)
        qs = (float(rng.uniform(0, 50)), float(rng.uniform(50, 100)))
        for q in (qs, (0.5, 99.5), (0.0, 100.0)):
            assert brain_percentiles(values, q) == [float(v) for v in np.percentile(values, list(q))]


@pytest.mark.parametrize("step", STEPS, ids=STEP_IDS)
def test_intensity_steps_do_not_depend_on_memory_layout(scan, step):
    from brats_ad.preprocess.base import empty_slice_major

    slice_major = empty_slice_major(scan.image.shape, np.float32)
    slice_major[...] = scan.image
    expected = step(scan).image
    for image in (slice_major, slice_major[:, ::-1, ::-1], np.asfortranarray(scan.image)):
        mask = image.any(axis=0)  # the mask follows the image (e.g. flipped by orient)
        out = step(Scan("c", image, scan.modalities, np.eye(4), brain_mask=mask)).image
        flips = (slice(None), slice(None, None, -1), slice(None, None, -1)) if image.strides[1] < 0 else ()
        reference = expected[(slice(None), *flips[1:])] if flips else expected
        np.testing.assert_allclose(out, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [({"knee": 1.0}, "knee must be in"), ({"knee": -1.5}, "knee must be in"),
                                           ({"compress": "yes"}, "compress must be true or false")])
def test_median_scale_rejects_bad_knee_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MedianScale(**kwargs)
