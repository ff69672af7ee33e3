import numpy as np
import pytest

from brats_ad.data.scan import Scan
from brats_ad.errors import ConfigError, DataError
from brats_ad.preprocess.histogram import HistogramStandardise


def _scan(scale, offset, seed):
    rng = np.random.default_rng(seed)
    image = np.zeros((1, 10, 10, 10), np.float32)
    image[0, 1:9, 1:9, 1:9] = rng.gamma(4.0, 1.0, (8, 8, 8)) * scale + offset
    return Scan(f"c{seed}", image, ("t2",), np.eye(4))


def test_fit_then_apply_makes_scanner_scalings_agree(tmp_path):
    scans = [_scan(10.0, 5.0, 0), _scan(100.0, 50.0, 1), _scan(3.0, 1.0, 2)]
    step = HistogramStandardise.fit(scans)
    loaded = HistogramStandardise(landmarks=str(step.save(tmp_path / "landmarks.json")))
    medians = []
    for scan in scans:
        out = loaded(scan)
        values = out.image[0][out.brain_mask]
        medians.append(np.median(values))
        assert np.all(out.image[0][~out.brain_mask] == 0.0) and np.all(np.isfinite(values))
    assert np.ptp(medians) < 2.0  # on a 0..100 scale; raw medians differ by ~100x


def test_missing_landmarks_teach_the_fix():
    with pytest.raises(ConfigError, match="fit"):
        HistogramStandardise()
    step = HistogramStandardise(landmarks={"t1": list(np.linspace(0, 100, 11))})
    with pytest.raises(DataError, match="no landmarks for 't2'"):
        step(_scan(1.0, 0.0, 0))


def test_landmarks_must_increase():
    with pytest.raises(ConfigError, match="increasing"):
        HistogramStandardise(landmarks={"t1": [0.0] * 11})
