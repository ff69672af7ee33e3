"""``score_volume``: 2D slices and 3D sliding windows, voxel alignment, one model run per batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from _infer_helpers import LatentScorer, MapScorer, ResidualScorer, toy_volume
from brats_ad.errors import ConfigError, DataError, PluginError
from brats_ad.infer.volume import from_slice_grid, score_volume, to_slice_grid
from brats_ad.models.autoencoder import AutoEncoderModel
from brats_ad.models.threshold import IntensityThreshold
from brats_ad.scorers.base import Score


def _threshold(dims: int, channels: int = 2) -> IntensityThreshold:
    return IntensityThreshold.from_params(spatial_dims=dims, in_channels=channels,
                                          modalities=("t1", "flair")[-channels:])


def _tiny_ae(dims: int, size: int = 16) -> AutoEncoderModel:
    torch.manual_seed(0)
    return AutoEncoderModel.from_params(spatial_dims=dims, in_channels=2, image_size=size,
                                        channels=(4, 8), strides=(2, 2))


class CountingModel(torch.nn.Module):
    """A real model whose ``infer`` calls are counted."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = model, 0
        self.config = model.config

    def infer(self, x):
        self.calls += 1
        return self.inner.infer(x)


class CountingScorer:
    def __init__(self, scorer) -> None:
        self.scorer, self.calls, self.outputs = scorer, 0, []
        self.map_kind = scorer.map_kind

    def __call__(self, out):
        self.calls += 1
        self.outputs.append(id(out))
        return self.scorer(out)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(0)


# -- 2D ---------------------------------------------------------------------------------------------
def test_2d_fast_path_map_is_the_flair_channel() -> None:
    image, brain, _ = toy_volume(shape=(24, 24, 10))
    result = score_volume(_threshold(2), image, brain, {"map": MapScorer()}, spatial_dims=2, size=24, device="cpu")
    amap = result["map"]
    assert amap.shape == (24, 24, 10) and amap.dtype == np.float32
    np.testing.assert_array_equal(amap[brain], image[1][brain])  # known answer: no resize, exact
    assert np.all(amap[~brain] == result.fill["map"]) and result.fill["map"] == pytest.approx(image[1][brain].min())
    assert result.model_calls == 1


def test_2d_resized_slices_come_back_voxel_aligned() -> None:
    """Non-square 40 x 30 slices, padded and shrunk to 16 x 16, then mapped back: the planted
    lesion is found at the same voxels."""
    image, brain, lesion = toy_volume(shape=(40, 30, 12))
    result = score_volume(_threshold(2), image, brain, {"map": MapScorer()}, spatial_dims=2, size=16,
                          batch_size=5, device="cpu")
    amap = result["map"]
    found = (amap > 0.35) & brain
    assert _dice(found, lesion) > 0.75
    np.testing.assert_allclose(_centroid(found), _centroid(lesion), atol=0.5)
    assert result.model_calls == math.ceil(result.scored.sum() / 5)


def test_slice_grid_round_trip_keeps_positions() -> None:
    x = torch.linspace(0, 1, 40)[:, None].expand(40, 30).clone()[None]  # ramp along X
    y = torch.linspace(0, 1, 30)[None, :].expand(40, 30).clone()[None]  # ramp along Y
    for ramp in (x, y):
        back = from_slice_grid(to_slice_grid(ramp, 64), (40, 30))
        assert back.shape == (1, 40, 30)
        inner = (slice(None), slice(2, -2), slice(2, -2))  # edge pixels see the replicate padding
        torch.testing.assert_close(back[inner], ramp[inner], atol=1e-3, rtol=0)


def test_2d_slices_without_brain_get_background_and_nan_scores() -> None:
    image, brain, _ = toy_volume(shape=(24, 24, 10))
    model = CountingModel(_threshold(2))
    result = score_volume(model, image, brain, {"map": MapScorer()}, spatial_dims=2, size=16, device="cpu",
                          background=-5.0)
    empty = ~brain.any(axis=(0, 1))
    assert empty.any() and np.array_equal(result.scored, ~empty)
    assert np.all(result["map"][:, :, empty] == -5.0) and np.isnan(result.sample_scores["map"][empty]).all()
    assert np.isfinite(result.sample_scores["map"][~empty]).all()
    assert result.volume_scores["map"] == pytest.approx(np.nanmax(result.sample_scores["map"]))


# -- 3D ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_3d_sliding_windows_stitch_the_flair_channel(blend: str) -> None:
    image, brain, lesion = toy_volume(shape=(40, 30, 12))
    scorers = {"map": MapScorer(), "const": LatentLike()}
    result = score_volume(_threshold(3), image, brain, scorers, spatial_dims=3, size=8, batch_size=16,
                          blend=blend, device="cpu")
    np.testing.assert_allclose(result["map"][brain], image[1][brain], atol=1e-5)
    # a "constant" scorer becomes a patch-wise map: varies across windows, not per voxel
    const = result["const"][brain]
    assert const.min() < const.max()
    assert result.windows.shape == (len(result.sample_scores["map"]), 3)
    assert result.windows.min() == 0 and tuple(result.windows.max(0) + 8) == (40, 30, 12)
    assert result.volume_scores["map"] == pytest.approx(0.9)  # the lesion window's top value


class LatentLike:
    """A constant-kind scorer on any output: the window's mean intensity."""

    map_kind = "constant"

    def __call__(self, out):
        s = out.x.flatten(1).mean(1)
        return Score(s.view(-1, 1, 1, 1, 1), s)


def test_3d_volume_smaller_than_the_patch_is_padded_and_cropped_back() -> None:
    image, brain, _ = toy_volume(shape=(20, 18, 12))
    result = score_volume(_threshold(3), image, brain, {"map": MapScorer()}, spatial_dims=3, size=16,
                          device="cpu")
    assert result["map"].shape == (20, 18, 12)
    np.testing.assert_allclose(result["map"][brain], image[1][brain], atol=1e-5)
    assert result.windows.min() < 0  # the window starts in MONAI's padding


# -- one model run per batch, every scorer on the same output ----------------------------------------
@pytest.mark.parametrize("dims", [2, 3])
def test_model_runs_once_per_batch_for_all_scorers(dims: int) -> None:
    image, brain, _ = toy_volume(shape=(24, 20, 12))
    model = CountingModel(_tiny_ae(dims, size=16 if dims == 2 else 8))
    scorers = {"residual": CountingScorer(ResidualScorer()), "latent": CountingScorer(LatentScorer()),
               "again": CountingScorer(ResidualScorer())}
    size = 16 if dims == 2 else 8
    result = score_volume(model, image, brain, scorers, spatial_dims=dims, size=size, batch_size=4, device="cpu")
    n = int(result.scored.sum()) if dims == 2 else len(result.windows)
    assert model.calls == result.model_calls == math.ceil(n / 4)
    for scorer in scorers.values():
        assert scorer.calls == model.calls
    assert scorers["residual"].outputs == scorers["latent"].outputs == scorers["again"].outputs  # same objects
    assert not model.inner.training
    for name in scorers:
        assert result[name].shape == (24, 20, 12) and np.isfinite(result[name]).all()
    np.testing.assert_array_equal(result["residual"], result["again"])


# -- errors -------------------------------------------------------------------------------------------
def test_bad_inputs_are_one_line_errors() -> None:
    image, brain, _ = toy_volume(shape=(24, 24, 10))
    model = _threshold(2)
    with pytest.raises(DataError, match=r"expected a \(C, X, Y, Z\) volume"):
        score_volume(model, image[0], brain, {"map": MapScorer()}, spatial_dims=2, size=16, device="cpu")
    with pytest.raises(DataError, match="brain mask shape"):
        score_volume(model, image, brain[:-1], {"map": MapScorer()}, spatial_dims=2, size=16, device="cpu")
    with pytest.raises(ConfigError, match="no scorers"):
        score_volume(model, image, brain, {}, spatial_dims=2, size=16, device="cpu")
    with pytest.raises(ConfigError, match="blend"):
        score_volume(model, image, brain, {"map": MapScorer()}, spatial_dims=3, size=8, blend="max", device="cpu")

    class Broken:
        map_kind = "voxel"

        def __call__(self, out):
            return Score(out.anomaly_map[:, :, :4], out.image_score)

    with pytest.raises(PluginError, match=r"scorer 'broken' returned a map of shape \(\d+, 1, 4, 16\)"):
        score_volume(model, image, brain, {"broken": Broken()}, spatial_dims=2, size=16, device="cpu")
