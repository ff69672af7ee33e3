import warnings

import numpy as np
import pytest

from brats_ad.data.scan import Scan
from brats_ad.errors import ConfigError
from brats_ad.preprocess.intensity import PercentileScale, ZScore


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


@pytest.mark.parametrize("step", [ZScore(), PercentileScale()], ids=["zscore", "percentile-scale"])
@pytest.mark.parametrize("value", [0.0, 7.0], ids=["all-zero", "constant"])
def test_constant_volume_gives_zeros_and_a_warning_never_nan(step, value):
    image = np.full((1, 4, 4, 4), value, np.float32)
    with pytest.warns(RuntimeWarning, match="case 'c'.*t1"):
        out = step(Scan("c", image, ("t1",), np.eye(4)))
    assert np.all(np.isfinite(out.image))
    assert np.all(out.image[0][out.brain_mask] == 0.0)


def test_non_constant_volume_does_not_warn(scan):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ZScore()(scan)
        PercentileScale()(scan)


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


@pytest.mark.parametrize("step", [ZScore(), PercentileScale()], ids=["zscore", "percentile-scale"])
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
