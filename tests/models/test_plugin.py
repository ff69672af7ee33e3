from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
import typing

import pytest
import torch

from brats_ad.models.base import AnomalyModel
from brats_ad.plugins import BUILTIN_PLUGINS, PluginManager, load_registries, make_plugin_manager
from brats_ad.registry import Source

PLUGIN = "brats_ad.models.plugin"

#: tiny overrides per model so every entry builds and runs on CPU in well under a second
TINY = {
    "ganomaly": {"image_size": 16, "latent_size": 8, "width": 4, "initial_padding": 1},
    "f-anogan": {"image_size": 16, "latent_size": 8, "width": 4},
    "anogan": {"image_size": 16, "latent_size": 8, "width": 4, "steps": 2},
    "ae": {"image_size": 16, "channels": (4, 8), "strides": (2, 2)},
    "vae": {"image_size": 16, "channels": (4, 8), "strides": (2, 2), "latent_size": 8},
    "flair-threshold": {},
}
#: where an entry's default deliberately differs from its config class's default
ENTRY_DEFAULTS = {("vae", "variant"): "vae", ("anogan", "inference"): "latent_optimisation"}


def _models():
    pm = PluginManager()
    pm.register_plugin(importlib.import_module(PLUGIN), PLUGIN, Source(PLUGIN, "brats-ad", "test"))
    pm.check_pending()
    return load_registries(pm).models


def test_builtin_models_are_registered():
    assert _models().names() == sorted(TINY)


def test_models_plugin_is_a_builtin():
    assert PLUGIN in BUILTIN_PLUGINS, "add 'brats_ad.models.plugin' to brats_ad.plugins.BUILTIN_PLUGINS"
    models = load_registries(make_plugin_manager(entrypoints=False)).models
    assert set(TINY) <= set(models.names())
    assert {entry.source.distribution for entry in models} == {"brats-ad"}


def test_listing_models_does_not_import_torch():
    code = f"import sys, {PLUGIN}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("name", sorted(TINY))
def test_params_list_every_config_field_with_its_default(name):
    entry = _models().get(name)
    model_cls = entry.load().__self__  # the factory is the bound classmethod Class.from_params
    config_cls = typing.get_type_hints(model_cls.__init__)["config"]
    fields = dataclasses.fields(config_cls)
    assert [f.name for f in fields][0] == "spatial_dims"
    assert set(entry.params) == {f.name for f in fields}
    for f in fields:
        if f.default is not dataclasses.MISSING and (name, f.name) not in ENTRY_DEFAULTS:
            assert entry.params[f.name] == f.default, f.name
    for (entry_name, key), value in ENTRY_DEFAULTS.items():
        if entry_name == name:
            assert entry.params[key] == value


@pytest.mark.parametrize("spatial_dims", [2, 3], ids=["2d", "3d"])
@pytest.mark.parametrize("name", sorted(TINY))
def test_every_entry_builds_and_provides_what_it_declares(name, spatial_dims):
    entry = _models().get(name)
    overrides = dict(TINY[name], spatial_dims=spatial_dims)
    size = 16 if spatial_dims == 2 else 8  # 3D: 8^3 patches
    if "image_size" in overrides:
        overrides["image_size"] = size
    torch.manual_seed(0)
    model = entry.create(**overrides)
    assert isinstance(model, AnomalyModel) and isinstance(model, torch.nn.Module)
    assert dataclasses.asdict(model.config)["spatial_dims"] == spatial_dims
    channels = entry.params["in_channels"]
    x = torch.rand((2, channels) + (size,) * spatial_dims) * 2 - 1
    with torch.no_grad():
        out = model.eval().infer(x)
    assert set(entry.provides) <= out.provides()
    assert spatial_dims in entry.dims
    # a checkpoint stores asdict(config); from_params rebuilds the same model
    rebuilt = entry.load()(**dataclasses.asdict(model.config))
    assert rebuilt.config == model.config


@pytest.mark.parametrize("name", sorted(set(TINY) - {"flair-threshold"}))
def test_every_trainable_model_sends_its_losses_through_fp16_loss_scaling(name):
    """Under amp = "fp16" (GPUs without bf16) a loss that skips the scaler can underflow to zero
    gradients. With a power-of-two scale, scaling and unscaling are exact in fp32, so a scaled
    step must give bit-identical weights to an unscaled one, and every optimiser that stepped
    must have gone through the scaler (``used_scaler``)."""
    from brats_ad.train.device import LoopOptimizer

    entry = _models().get(name)
    params = dict(TINY[name], spatial_dims=2)
    if name in ("f-anogan", "anogan"):
        params.update(gan_steps=2, n_critic=1)  # step 0: critic + generator, then the encoder phase
    x = torch.rand((4, entry.params["in_channels"], 16, 16)) * 2 - 1

    def run(scale):
        torch.manual_seed(0)
        model = entry.create(**params).train()
        scaler = torch.amp.GradScaler("cpu", init_scale=scale) if scale else None
        optimizers = {k: LoopOptimizer(o, scaler, k) for k, o in model.configure_optimizers().items()}
        stepped = set()
        for _ in range(3):
            torch.manual_seed(1)
            model.train_step(x, optimizers)
            stepped |= {k for k, o in optimizers.items() if o.used_scaler}
            if scaler is not None:
                scaler.update()
        return model.state_dict(), stepped, set(optimizers)

    plain, _, _ = run(None)
    scaled, stepped, names = run(2.0**12)
    assert stepped == names, f"optimisers stepped without the scaler: {sorted(names - stepped)}"
    for key, value in plain.items():
        torch.testing.assert_close(scaled[key], value, rtol=0, atol=0, msg=key)
