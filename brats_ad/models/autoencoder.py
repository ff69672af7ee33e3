"""Autoencoder baselines (AE and VAE), 2D and 3D, built on MONAI's networks.

The reconstruction-error baseline of Baur et al. (2021, "Autoencoders for unsupervised anomaly
segmentation in brain MR images: a comparative study"): train on healthy data, score by the
residual ``|x - x'|`` (a scorer plugin does that). MONAI's ``AutoEncoder``/``VarAutoEncoder``
already are N-d, so this module only adds the config, the loss and the common output.

What the output holds
    ``reconstruction``  x' in the input's range (``tanh`` for inputs in [-1, 1], or identity).
    ``latent_in``       the bottleneck of x: for ``"ae"`` the encoder features after MONAI's
                        intermediate block, ``(B, channels[-1], *spatial / prod(strides))``;
                        for ``"vae"`` the posterior mean, ``(B, latent_size, 1, 1[, 1])``.
    ``latent_out``      the same encoding applied to the reconstruction x' (not a second encoder,
                        unlike GANomaly), so ``latent_pair`` scorers compare z(x) with z(x').
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
from monai.networks.nets import AutoEncoder, VarAutoEncoder
from torch import Tensor, nn

from brats_ad.errors import ConfigError, DataError
from brats_ad.models.output import ModelOutput
from brats_ad.train.device import backward

_VARIANTS = ("ae", "vae")
_LOSSES = ("l1", "l2")
_ACTIVATIONS = ("tanh", "identity")


@dataclass(frozen=True)
class AutoEncoderConfig:
    """Hyper-parameters of :class:`AutoEncoderModel` (JSON-safe; saved in checkpoints)."""

    spatial_dims: int
    in_channels: int = 1
    variant: str = "ae"  # "ae" (deterministic) or "vae" (KL-regularised, Kingma & Welling 2014)
    image_size: int = 128  # edge of the square/cubic input; the VAE's linear bottleneck needs it
    channels: tuple[int, ...] = (32, 64, 128, 256)  # one encoder block per entry
    strides: tuple[int, ...] = (2, 2, 2, 2)  # one stride per block
    num_res_units: int = 0
    norm: str = "instance"  # MONAI norm name: "instance", "batch", ...
    latent_size: int = 128  # VAE only: size of z
    loss: str = "l2"  # reconstruction loss: "l1" or "l2", mean over voxels
    kl_weight: float = 1e-3  # VAE only: weight of KL (summed over z) against the per-voxel loss
    output_activation: str = "tanh"  # "tanh" matches inputs in [-1, 1]; "identity" for z-scores
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        # TOML/JSON give lists; a frozen config keeps tuples so it stays hashable and comparable
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"autoencoder: spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        if self.in_channels < 1:
            raise ConfigError(f"autoencoder: in_channels must be >= 1, got {self.in_channels}")
        _check_choice("variant", self.variant, _VARIANTS)
        _check_choice("loss", self.loss, _LOSSES)
        _check_choice("output_activation", self.output_activation, _ACTIVATIONS)
        if len(self.channels) != len(self.strides) or not self.channels:
            raise ConfigError(
                f"autoencoder: got {len(self.channels)} channels but {len(self.strides)} strides; "
                "need one stride per channel"
            )
        if self.image_size % self.downsampling:
            raise ConfigError(
                f"autoencoder: image_size {self.image_size} is not divisible by the total stride "
                f"{self.downsampling} (product of strides {self.strides}); change image_size or strides"
            )

    @property
    def downsampling(self) -> int:
        """How much the encoder shrinks each spatial axis."""
        return math.prod(self.strides)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"autoencoder: {name} must be one of {', '.join(allowed)}; got {value!r}")


class AutoEncoderModel(nn.Module):
    """AE/VAE anomaly model; provides ``reconstruction`` and ``latent_pair``."""

    trainable = True

    def __init__(self, config: AutoEncoderConfig) -> None:
        super().__init__()
        self.config = config
        common: dict[str, Any] = dict(
            spatial_dims=config.spatial_dims,
            out_channels=config.in_channels,
            channels=config.channels,
            strides=config.strides,
            num_res_units=config.num_res_units,
            norm=config.norm,
        )
        if config.variant == "vae":
            in_shape = (config.in_channels,) + (config.image_size,) * config.spatial_dims
            self.net: nn.Module = VarAutoEncoder(
                in_shape=in_shape, latent_size=config.latent_size, use_sigmoid=False, **common
            )
        else:
            self.net = AutoEncoder(in_channels=config.in_channels, **common)

    @classmethod
    def from_params(cls, **params: Any) -> "AutoEncoderModel":
        """The registry factory: build from the config's fields as keyword arguments."""
        return cls(AutoEncoderConfig(**params))

    # -- forward pieces --------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        cfg = self.config
        if x.ndim != cfg.spatial_dims + 2 or x.shape[1] != cfg.in_channels:
            raise DataError(
                f"autoencoder: expected (B, {cfg.in_channels}) + {cfg.spatial_dims} spatial axes, "
                f"got shape {tuple(x.shape)}; match in_channels/spatial_dims to the data"
            )
        spatial = tuple(x.shape[2:])
        if cfg.variant == "vae" and any(s != cfg.image_size for s in spatial):
            raise DataError(
                f"autoencoder (vae): expected spatial size {cfg.image_size} on every axis, got {spatial}; "
                "set image_size to the data's slice/patch size"
            )
        if any(s % cfg.downsampling for s in spatial):
            raise DataError(
                f"autoencoder: spatial size {spatial} is not divisible by the total stride "
                f"{cfg.downsampling}; crop/pad the data or change strides"
            )

    def _activate(self, y: Tensor) -> Tensor:
        return torch.tanh(y) if self.config.output_activation == "tanh" else y

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The latent code of ``x`` and, for the VAE, its log-variance (``None`` for the AE)."""
        if self.config.variant == "vae":
            mu, logvar = self.net.encode_forward(x)  # (B, latent_size) each
            return mu, logvar
        h = self.net.intermediate(self.net.encode(x))  # (B, channels[-1], *spatial / downsampling)
        return h, None

    def decode(self, z: Tensor) -> Tensor:
        if self.config.variant == "vae":
            return self._activate(self.net.decode_forward(z, use_sigmoid=False))
        return self._activate(self.net.decode(z))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(reconstruction, latent, logvar)``; the VAE samples z only in training mode."""
        z, logvar = self.encode(x)
        code = z
        if logvar is not None and self.training:
            code = z + torch.randn_like(z) * torch.exp(0.5 * logvar)  # reparameterisation
        return self.decode(code), z, logvar

    # -- the AnomalyModel protocol ---------------------------------------------------------------
    def _per_sample_loss(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(reconstruction loss, KL)`` per sample, float32, each ``(B,)``."""
        self._check_input(x)
        recon, mu, logvar = self(x)
        residual = recon.float() - x.float()
        dims = tuple(range(1, x.ndim))
        rec = residual.abs().mean(dims) if self.config.loss == "l1" else residual.square().mean(dims)
        if logvar is None:
            return rec, torch.zeros_like(rec)
        mu, logvar = mu.float(), logvar.float()
        kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(1)  # (B,) KL(q(z|x) || N(0, I))
        return rec, kl

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg = self.config
        return {
            "autoencoder": torch.optim.Adam(
                self.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
            )
        }

    def train_step(self, x: Tensor, optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, float]:
        """One Adam step on the reconstruction loss (+ ``kl_weight`` * KL for the VAE)."""
        opt = optimizers["autoencoder"]
        rec, kl = self._per_sample_loss(x)
        loss = (rec + self.config.kl_weight * kl).mean()
        opt.zero_grad(set_to_none=True)
        backward(loss, opt)
        opt.step()
        losses = {"loss": loss.item(), "reconstruction": rec.mean().item()}
        if self.config.variant == "vae":
            losses["kl"] = kl.mean().item()
        return losses

    def validation_loss(self, x: Tensor) -> Tensor:
        """The training objective per sample ``(B,)`` (the loop sets eval mode and no_grad)."""
        rec, kl = self._per_sample_loss(x)
        return rec + self.config.kl_weight * kl

    def infer(self, x: Tensor) -> ModelOutput:
        """Reconstruction plus latent codes of x and of x' (same encoder, see module docstring)."""
        self._check_input(x)
        recon, z, _ = self(x)
        z_out, _ = self.encode(recon)
        if self.config.variant == "vae":
            whole = (1,) * self.config.spatial_dims
            z, z_out = z.view(*z.shape, *whole), z_out.view(*z_out.shape, *whole)  # (B, L, 1, 1[, 1])
        return ModelOutput(x=x, reconstruction=recon, latent_in=z, latent_out=z_out)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
