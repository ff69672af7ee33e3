"""In-test plugins for the bench tests: a model that diverges and a scorer that can 'kill' a run.

Importable as ``_bench_plugins`` (pytest's rootdir-prepend mode puts tests/bench on sys.path);
registered on a fresh plugin manager by :func:`bench_registries`, never through entry points.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from torch import nn

from brats_ad import __version__
from brats_ad.models.output import ModelOutput
from brats_ad.plugins import hookimpl, load_registries, make_plugin_manager
from brats_ad.registry import Registries, Source
from brats_ad.scorers.base import Score
from brats_ad.train.device import backward


@dataclass(frozen=True)
class NanConfig:
    spatial_dims: int = 2
    in_channels: int = 1
    lr: float = 1e-2


class NanAE(nn.Module):
    """A 1x1-conv 'autoencoder' whose training loss is NaN: the loop raises TrainingDiverged."""

    trainable = True

    def __init__(self, config: NanConfig) -> None:
        super().__init__()
        self.config = config
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[config.spatial_dims]
        self.net = conv(config.in_channels, config.in_channels, 1)

    @classmethod
    def from_params(cls, **params) -> "NanAE":
        return cls(NanConfig(**params))

    def configure_optimizers(self):
        return {"ae": torch.optim.SGD(self.parameters(), lr=self.config.lr)}

    def train_step(self, x, optimizers):
        opt = optimizers["ae"]
        opt.zero_grad()
        loss = ((self.net(x) - x) ** 2).mean()
        backward(loss, opt)
        opt.step()
        return {"recon": float("nan")}

    def validation_loss(self, x):
        return ((self.net(x) - x) ** 2).flatten(1).mean(1)

    def infer(self, x):
        return ModelOutput(x=x, reconstruction=self.net(x))


class KillSwitch:
    """A residual scorer that raises KeyboardInterrupt while ``KillSwitch.armed`` (a killed run)."""

    map_kind = "voxel"
    armed = False
    calls = 0

    def __call__(self, out):
        KillSwitch.calls += 1
        if KillSwitch.armed:
            raise KeyboardInterrupt("simulated kill")
        amap = (out.x - out.reconstruction).abs().mean(1, keepdim=True)
        return Score(amap, amap.flatten(1).mean(1))


class Broken:
    """A scorer that raises: its cell fails, the unit's other cells go on."""

    map_kind = "voxel"

    def __call__(self, out):
        raise ValueError("broken scorer")


class _Plugin:
    @hookimpl
    def brats_ad_register_models(self, registry):
        registry.add("nan-ae", "_bench_plugins:NanAE.from_params", help="diverges", dims=(2, 3),
                     provides=("reconstruction",), params={"spatial_dims": 2, "in_channels": 1, "lr": 1e-2})
        registry.add("ae-2d-only", "_bench_plugins:NanAE.from_params", help="2D only", dims=(2,),
                     provides=("reconstruction",), params={"spatial_dims": 2, "in_channels": 1, "lr": 1e-2})

    @hookimpl
    def brats_ad_register_scorers(self, registry):
        registry.add("kill", "_bench_plugins:KillSwitch", requires={"reconstruction"}, help="kill switch")
        registry.add("broken", "_bench_plugins:Broken", requires={"reconstruction"}, help="raises")


def bench_registries(extra: bool = True) -> Registries:
    """Built-ins (scorers included) plus this module's test plugins, on a fresh manager."""
    pm = make_plugin_manager(entrypoints=False)
    if not pm.has_plugin("brats_ad.scorers.plugin"):  # until the scorers are a built-in plugin
        pm.register_plugin(importlib.import_module("brats_ad.scorers.plugin"), "brats_ad.scorers.plugin",
                           Source(plugin="brats_ad.scorers.plugin", distribution="brats-ad", version=__version__))
    if extra:
        pm.register_plugin(_Plugin(), "bench-test-plugins",
                           Source(plugin="bench-test-plugins", distribution="bench-tests", version="0.0"))
    return load_registries(pm)


__all__ = ["Broken", "KillSwitch", "NanAE", "bench_registries"]
