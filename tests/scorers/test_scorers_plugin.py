"""The built-in scorer entries: names, factories, requires in step with the classes."""

from __future__ import annotations

import pytest
import torch

import brats_ad.scorers.plugin as scorer_plugin
from brats_ad.models.output import CAPABILITIES, ModelOutput
from brats_ad.plugins import PluginManager, load_registries
from brats_ad.registry import Source
from brats_ad.scorers.base import Score, Scorer, fit_if_needed

NAMES = ["combined", "discriminator", "latent", "model-map", "residual"]


@pytest.fixture(scope="module")
def scorers():
    pm = PluginManager()
    pm.register_plugin(scorer_plugin, "brats_ad.scorers.plugin", Source("brats_ad.scorers.plugin", "brats-ad", None))
    return load_registries(pm).scorers


def test_every_builtin_scorer_is_registered(scorers):
    assert scorers.names() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_entry_requires_match_the_class_and_capabilities(scorers, name):
    entry = scorers.get(name)
    cls = entry.load()
    assert entry.requires == cls.requires
    assert entry.requires <= set(CAPABILITIES)
    assert cls.map_kind in ("voxel", "constant")
    assert "postprocess" in entry.params


def _full_output(spatial_dims: int) -> ModelOutput:
    gen = torch.Generator().manual_seed(0)
    spatial = (4,) * spatial_dims
    x = torch.rand((2, 1, *spatial), generator=gen)
    return ModelOutput(
        x=x, reconstruction=torch.rand((2, 1, *spatial), generator=gen).requires_grad_(),
        latent_in=torch.rand((2, 3) + (1,) * spatial_dims, generator=gen),
        latent_out=torch.rand((2, 3) + (1,) * spatial_dims, generator=gen),
        disc_features_real=torch.rand((2, 5) + (2,) * spatial_dims, generator=gen),
        disc_features_fake=torch.rand((2, 5) + (2,) * spatial_dims, generator=gen),
        image_score=torch.rand(2, generator=gen), anomaly_map=x.clone(),
        brain_mask=torch.ones((2, 1, *spatial), dtype=torch.bool),
    )


@pytest.mark.parametrize("name", NAMES)
def test_created_with_defaults_each_scorer_honours_the_contract(scorers, name, spatial_dims):
    output = _full_output(spatial_dims)
    scorer = scorers.get(name).create()
    assert isinstance(scorer, Scorer)
    fit_if_needed(scorer, [output, _full_output(spatial_dims)])
    score = scorer(output)
    assert isinstance(score, Score)
    assert score.anomaly_map.shape == (2, 1) + (4,) * spatial_dims and score.anomaly_map.dtype == torch.float32
    assert score.sample_score.shape == (2,) and score.sample_score.dtype == torch.float32
    assert torch.isfinite(score.anomaly_map).all() and torch.isfinite(score.sample_score).all()
    assert not score.anomaly_map.requires_grad and not score.sample_score.requires_grad  # no graph kept


def test_listing_scorers_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, brats_ad.scorers.plugin; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
