"""Sample-level AUROC / AUPRC (scikit-learn) with the project's checks and undefined policy."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from brats_ad.errors import UndefinedMetricError
from brats_ad.metrics.sample import SampleAUPRC, SampleAUROC, sample_auprc_score, sample_auroc_score


def test_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.4
    s = rng.standard_normal(300) + y
    assert sample_auroc_score(y, s) == pytest.approx(roc_auc_score(y, s))
    assert sample_auprc_score(y, s) == pytest.approx(average_precision_score(y, s))
    assert SampleAUROC()(y, s) == sample_auroc_score(y, s) and SampleAUPRC()(y, s) == sample_auprc_score(y, s)


def test_one_class():
    with pytest.raises(UndefinedMetricError, match="without a negative .* on_undefined='nan'"):
        sample_auroc_score([1, 1, 1], [0.1, 0.2, 0.3])
    assert np.isnan(sample_auroc_score([0, 0], [0.1, 0.2], on_undefined="nan"))
    assert sample_auprc_score([1, 1], [0.1, 0.2]) == 1.0
    with pytest.raises(UndefinedMetricError, match="AUPRC is undefined without a positive"):
        sample_auprc_score([0, 0], [0.1, 0.2])


def test_checks():
    with pytest.raises(ValueError, match="1-D arrays"):
        sample_auroc_score(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="y_score must be finite; got 1 NaN/inf"):
        sample_auroc_score([0, 1], [0.0, np.nan])
    with pytest.raises(ValueError, match="y_true must be binary"):
        sample_auroc_score([0, 2], [0.0, 1.0])
