"""A tiny real conv autoencoder implementing the AnomalyModel protocol, for the loop's tests.

Importable as ``_train_models`` (pytest's rootdir-prepend mode puts tests/train on sys.path);
its registry factory is ``"_train_models:TinyAE.from_params"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from brats_ad.models.output import ModelOutput
from brats_ad.registry import Registries
from brats_ad.train.device import backward


@dataclass(frozen=True)
class TinyAEConfig:
    spatial_dims: int = 2
    in_channels: int = 1
    width: int = 4
    lr: float = 1e-2
    optimizer: str = "adam"  # adam | sgd
    nan_at_step: int = -1  # return a NaN loss at this (1-based, global) training step
    dropout: float = 0.0  # exercises the seeded torch RNG inside train_step
    channels: tuple[int, ...] = (4, 8)  # a tuple field: saved as a list, rebuilt as a tuple


class TinyAE(nn.Module):
    trainable = True

    def __init__(self, config: TinyAEConfig) -> None:
        super().__init__()
        self.config = config
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[config.spatial_dims]
        deconv = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[config.spatial_dims]
        c = config.width
        self.encoder = nn.Sequential(conv(config.in_channels, c, 3, stride=2, padding=1), nn.ReLU(),
                                     nn.Dropout(config.dropout))
        self.decoder = deconv(c, config.in_channels, 4, stride=2, padding=1)
        self._steps = 0

    @classmethod
    def from_params(cls, **params) -> "TinyAE":
        if "channels" in params:
            params["channels"] = tuple(params["channels"])
        return cls(TinyAEConfig(**params))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def configure_optimizers(self):
        if self.config.optimizer == "sgd":
            return {"ae": torch.optim.SGD(self.parameters(), lr=self.config.lr)}
        return {"ae": torch.optim.Adam(self.parameters(), lr=self.config.lr)}

    def train_step(self, x, optimizers):
        self._steps += 1
        opt = optimizers["ae"]
        opt.zero_grad()
        loss = ((self(x) - x) ** 2).mean()
        backward(loss, opt)
        opt.step()
        value = float(loss.detach())
        if self._steps == self.config.nan_at_step:
            value = float("nan")
        return {"recon": value, "half": value / 2}

    def validation_loss(self, x):
        return ((self(x) - x) ** 2).flatten(1).mean(1)

    def infer(self, x):
        with torch.no_grad():
            return ModelOutput(x=x, reconstruction=self(x))


class FlatThreshold(nn.Module):
    """Training-free: ``fit`` stores the mean intensity of the healthy training samples."""

    trainable = False

    def __init__(self, config: TinyAEConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.zeros(()))

    @classmethod
    def from_params(cls, **params) -> "FlatThreshold":
        if "channels" in params:
            params["channels"] = tuple(params["channels"])
        return cls(TinyAEConfig(**params))

    def fit(self, batches) -> None:
        total, count = 0.0, 0
        for x in batches:
            total += float(x.sum())
            count += x.numel()
        self.mean.fill_(total / count)

    def infer(self, x):
        return ModelOutput(x=x, anomaly_map=(x - self.mean).abs())


def tiny_registries() -> Registries:
    regs = Registries.empty()
    regs.models.add("tiny-ae", "_train_models:TinyAE.from_params", help="test model",
                    params={"spatial_dims": 2, "in_channels": 1, "width": 4, "lr": 1e-2})
    regs.models.add("flat", "_train_models:FlatThreshold.from_params", help="test model", params={})
    return regs


class TensorSet(torch.utils.data.Dataset):
    """Random healthy-like samples (C, *spatial); deterministic per seed."""

    def __init__(self, n: int, shape: tuple[int, ...], seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.data = torch.rand((n,) + shape, generator=gen) * 2 - 1

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.data[i]
