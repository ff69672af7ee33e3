from __future__ import annotations

import pytest
import torch

from brats_ad.errors import DataError
from brats_ad.models.output import ModelOutput
from brats_ad.models.threshold import IntensityThreshold, ThresholdConfig
from brats_ad.scorers.model_map import ModelMap


def test_passes_the_flair_threshold_map_and_its_image_score(spatial_dims):
    x = torch.full((2, 2) + (4,) * spatial_dims, -1.0)
    x[(0, 1) + (1,) * spatial_dims] = 0.5  # one bright FLAIR voxel in sample 0
    model = IntensityThreshold(ThresholdConfig(spatial_dims=spatial_dims, in_channels=2, modalities=("t1", "flair")))
    out = model.infer(x)
    score = ModelMap()(out)
    torch.testing.assert_close(score.anomaly_map, x[:, 1:2])
    torch.testing.assert_close(score.sample_score, out.image_score)


def test_without_image_score_the_score_is_the_brain_mean():
    amap = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]])
    brain = torch.tensor([[[[True, True], [False, False]]]])
    out = ModelOutput(x=torch.zeros(1, 3, 2, 2), anomaly_map=amap, brain_mask=brain)
    assert float(ModelMap()(out).sample_score) == pytest.approx(2.0)


def test_map_of_wrong_shape_is_an_error():
    out = ModelOutput(x=torch.zeros(1, 1, 2, 2), anomaly_map=torch.zeros(1, 2, 2, 2))
    with pytest.raises(DataError, match="expected the model's anomaly_map of shape"):
        ModelMap()(out)
