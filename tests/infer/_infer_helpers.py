"""Small real scorers (the Scorer protocol) and registries for the inference tests.

Importable as ``_infer_helpers`` (pytest's rootdir-prepend mode puts tests/infer on sys.path);
registry factories are ``"_infer_helpers:<Class>"``. Kept independent of the built-in scorer
plugins so these tests pin inference, not scorer formulas.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from brats_ad.scorers.base import Score

TEST_SCORERS = ("t-residual", "t-latent", "t-map", "t-fitted")


class ResidualScorer:
    """Mean over channels of ``|x - x'|``; sample score = its mean."""

    map_kind = "voxel"

    def __call__(self, out: Any) -> Score:
        amap = (out.x - out.reconstruction).abs().mean(1, keepdim=True)
        return Score(amap, amap.flatten(1).mean(1))


class LatentScorer:
    """``mean((z - z')^2)`` per sample, broadcast as a constant map (returned as (B, 1, 1, ...))."""

    map_kind = "constant"

    def __call__(self, out: Any) -> Score:
        s = (out.latent_in - out.latent_out).square().flatten(1).mean(1)
        return Score(s.view(-1, 1, *([1] * (out.x.ndim - 2))), s)


class MapScorer:
    """The model's own map (the FLAIR threshold's FLAIR channel)."""

    map_kind = "voxel"

    def __call__(self, out: Any) -> Score:
        amap = out.anomaly_map
        sample = out.image_score if out.image_score is not None else amap.flatten(1).amax(1)
        return Score(amap, sample)


class FittedScorer:
    """z-score of the model map (or the residual) against healthy validation mean / std."""

    map_kind = "voxel"
    fit_calls = 0  # class-wide: counts fits across instances (predict builds a new one per run)

    def __init__(self) -> None:
        self.mean, self.std = 0.0, 1.0

    @staticmethod
    def _raw(out: Any) -> torch.Tensor:
        if out.anomaly_map is not None:
            return out.anomaly_map
        return (out.x - out.reconstruction).abs().mean(1, keepdim=True)

    def fit(self, healthy_outputs: Iterable[Any]) -> None:
        type(self).fit_calls += 1
        values = torch.cat([self._raw(o).flatten() for o in healthy_outputs]).double()
        self.mean, self.std = float(values.mean()), float(values.std()) or 1.0

    def state_dict(self) -> dict[str, Any]:
        return {"mean": torch.tensor(self.mean), "std": self.std}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.std = float(state["mean"]), float(state["std"])

    def __call__(self, out: Any) -> Score:
        amap = (self._raw(out) - self.mean) / self.std
        return Score(amap, amap.flatten(1).amax(1))


def registries_with_test_scorers():
    """Built-in registries (no entry points) plus the four test scorers."""
    from brats_ad.plugins import load_registries, make_plugin_manager

    regs = load_registries(make_plugin_manager(entrypoints=False))
    regs.scorers.add("t-residual", "_infer_helpers:ResidualScorer", requires={"reconstruction"}, help="test")
    regs.scorers.add("t-latent", "_infer_helpers:LatentScorer", requires={"latent_pair"}, help="test")
    regs.scorers.add("t-map", "_infer_helpers:MapScorer", requires={"anomaly_map"}, help="test")
    regs.scorers.add("t-fitted", "_infer_helpers:FittedScorer", requires={"anomaly_map"}, help="test")
    return regs


def data_factories():
    """tests/data/_data_factories.py, loaded by path (tests/data may not be on sys.path)."""
    path = Path(__file__).resolve().parents[1] / "data" / "_data_factories.py"
    spec = importlib.util.spec_from_file_location("_infer_data_factories", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toy_volume(shape=(40, 30, 12), channels=2, seed=0):
    """``(image (C, X, Y, Z), brain (X, Y, Z), lesion (X, Y, Z))``: a noisy box brain whose
    last channel has a bright planted cube."""
    rng = np.random.default_rng(seed)
    image = np.full((channels, *shape), -1.0, dtype=np.float32)
    brain = np.zeros(shape, dtype=bool)
    brain[4:-4, 3:-3, 2:-2] = True
    image[:, brain] = rng.uniform(-0.6, -0.2, size=(channels, int(brain.sum())))
    lesion = np.zeros(shape, dtype=bool)
    lesion[20:28, 10:17, 4:9] = True
    image[-1, lesion] = 0.9
    return image, brain, lesion
