"""GANomaly (Akcay, Atapour-Abarghouei, Breckon, ACCV 2018, arXiv:1805.06725), 2D and 3D.

A generator G_E -> G_D -> E learns to reconstruct healthy inputs ``x`` (in [-1, 1]); a
discriminator D whose body is the same DCGAN encoder tells ``x`` from ``x' = G(x)``. At test
time the latent distance ``mean((z - z')^2)`` is the sample score (higher = more anomalous).

Losses (the paper and its reference code, github.com/samet-akcay/ganomaly):

- ``L_adv = mean((f(x) - f(x'))^2)``: feature matching on D's last feature map;
- ``L_con = mean(|x - x'|)``;
- ``L_enc = mean((z - z')^2)``;
- ``L_G = w_adv L_adv + w_con L_con + w_enc L_enc``; ``L_D = (BCE(D(x), 1) + BCE(D(x'), 0)) / 2``.

Deliberate differences from anomalib 2.7 (whose architecture we match layer by layer):
anomalib's ``L_adv`` is the MSE between D's *predictions* and its ``L_enc`` a smooth-L1; we
follow the paper and reference code (features; L2). ``L_con`` and ``L_D`` agree (tested).
``L_D`` is computed from logits (``binary_cross_entropy_with_logits``: stable and allowed under
autocast); on D's sigmoid outputs it equals anomalib's BCE to float precision.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Iterator, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brats_ad.errors import ConfigError, DataError
from brats_ad.models.ganomaly_nets import (
    Discriminator,
    DiscriminatorOutput,
    Generator,
    GeneratorOutput,
    encoder_sizes,
)
from brats_ad.models.layers import dcgan_init
from brats_ad.models.output import ModelOutput
from brats_ad.train.device import backward

__all__ = ["Ganomaly", "GanomalyConfig", "GeneratorLosses", "discriminator_loss", "generator_losses"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GanomalyConfig:
    """GANomaly hyper-parameters; defaults are the paper's / anomalib's 2D configuration.

    ``image_size`` is the edge of the square/cubic input, a power of 2. ``width`` is the first
    layer's feature count (anomalib's ``n_features``; doubled at each pyramid level).
    ``initial_padding`` is the stem convolution's padding: 4 as anomalib (our parity
    reference; needs ``image_size >= 32``), 1 as the reference code / DCGAN (``>= 8``).
    ``eval_batch_stats=True`` reproduces the reference code's test-time batch statistics
    (ganomaly issues #47, #83): scores then depend on the batch; off by default.
    """

    spatial_dims: int
    in_channels: int = 1
    image_size: int = 128
    latent_size: int = 100
    width: int = 64
    extra_layers: int = 0
    add_final_conv: bool = True
    w_adv: float = 1.0
    w_con: float = 50.0
    w_enc: float = 1.0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    eval_batch_stats: bool = False
    initial_padding: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.spatial_dims, bool) or self.spatial_dims not in (2, 3):
            raise ConfigError(f"ganomaly: spatial_dims must be 2 (slices) or 3 (patches), got {self.spatial_dims!r}")
        for name, low in (("in_channels", 1), ("image_size", 1), ("latent_size", 1), ("width", 1),
                          ("extra_layers", 0), ("initial_padding", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"ganomaly: {name} must be an integer >= {low}, got {value!r}")
        size = self.image_size
        if size & (size - 1):
            raise ConfigError(
                f"ganomaly: image_size must be a power of 2, got {size}; "
                f"resize or crop inputs to {1 << (size.bit_length() - 1)} or {1 << size.bit_length()}"
            )
        head_in = encoder_sizes(size, self.initial_padding)[-1]
        if head_in != 4:
            smallest = 32 if self.initial_padding == 4 else "a larger size"
            raise ConfigError(
                f"ganomaly: image_size {size} with initial_padding {self.initial_padding} leaves a "
                f"{head_in}-voxel edge before the latent convolution, need 4; "
                f"use image_size >= {smallest} or initial_padding=1 (which allows >= 8)"
            )
        if self.add_final_conv is not True:
            raise ConfigError(
                "ganomaly: add_final_conv=False leaves the generator without a latent vector; "
                "only True is supported (the reference code uses False only inside D, which "
                "brats-ad builds itself)"
            )
        for name in ("w_adv", "w_con", "w_enc"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"ganomaly: {name} must be a finite number >= 0, got {value!r}")
        if not _is_number(self.lr) or not self.lr > 0 or not math.isfinite(self.lr):
            raise ConfigError(f"ganomaly: lr must be a finite number > 0, got {self.lr!r}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value < 1:
                raise ConfigError(f"ganomaly: {name} must be in [0, 1), got {value!r}")
        if not isinstance(self.eval_batch_stats, bool):
            raise ConfigError(f"ganomaly: eval_batch_stats must be true or false, got {self.eval_batch_stats!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class GeneratorLosses(NamedTuple):
    total: Tensor  # w_adv * adv + w_con * con + w_enc * enc
    adv: Tensor
    con: Tensor
    enc: Tensor


def generator_losses(
    x: Tensor, gen: GeneratorOutput, features_real: Tensor, features_fake: Tensor, config: GanomalyConfig
) -> GeneratorLosses:
    """The generator's batch-mean losses (float32 even under autocast)."""
    adv = F.mse_loss(features_fake.float(), features_real.float())
    con = F.l1_loss(gen.reconstruction.float(), x.float())
    enc = F.mse_loss(gen.latent_out.float(), gen.latent_in.float())
    total = config.w_adv * adv + config.w_con * con + config.w_enc * enc
    return GeneratorLosses(total, adv, con, enc)


def discriminator_loss(logit_real: Tensor, logit_fake: Tensor) -> Tensor:
    """``(BCE(D(x), real) + BCE(D(x'), fake)) / 2`` from D's logits ``(B,)``."""
    real = F.binary_cross_entropy_with_logits(logit_real.float(), torch.ones_like(logit_real, dtype=torch.float32))
    fake = F.binary_cross_entropy_with_logits(logit_fake.float(), torch.zeros_like(logit_fake, dtype=torch.float32))
    return 0.5 * (real + fake)


class Ganomaly(nn.Module):
    """GANomaly as an :class:`~brats_ad.models.base.AnomalyModel` (one definition, 2D and 3D).

    Inputs are ``(B, in_channels, *[image_size] * spatial_dims)`` in [-1, 1].
    """

    trainable = True
    #: the reference code re-initialises D when its loss falls below this (D has won)
    d_reinit_below: float = 1e-5

    def __init__(self, config: GanomalyConfig) -> None:
        super().__init__()
        if not isinstance(config, GanomalyConfig):
            raise ConfigError(
                f"ganomaly: expected a GanomalyConfig, got {type(config).__name__}; "
                "use Ganomaly.from_params(**params) for keyword parameters"
            )
        self.config = config
        c = config
        self.generator = Generator(c.spatial_dims, c.in_channels, c.image_size, c.latent_size,
                                   c.width, c.extra_layers, c.initial_padding)
        self.discriminator = Discriminator(c.spatial_dims, c.in_channels, c.image_size, c.width,
                                           c.extra_layers, c.initial_padding)
        self.apply(dcgan_init)  # apply() reaches every leaf convolution and batch norm
        self.d_reinit_count = 0

    @classmethod
    def from_params(cls, **params: object) -> "Ganomaly":
        """Build from keyword parameters (the registry factory); unknown keys are an error."""
        known = [f.name for f in fields(GanomalyConfig)]
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigError(f"ganomaly has no parameter {unknown[0]!r}; allowed: {', '.join(known)}")
        return cls(GanomalyConfig(**params))  # type: ignore[arg-type]

    # -- AnomalyModel ---------------------------------------------------------------------------
    def forward(self, x: Tensor) -> GeneratorOutput:
        """The generator pass (lets DDP / torch.compile wrap the model)."""
        return self.generator(x)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Two Adam optimisers (paper: lr 2e-4, betas (0.5, 0.999))."""
        c = self.config
        betas = (c.beta1, c.beta2)
        return {
            "generator": torch.optim.Adam(self.generator.parameters(), lr=c.lr, betas=betas),
            "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=c.lr, betas=betas),
        }

    def train_step(self, x: Tensor, optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, float]:
        """Generator update, then discriminator update (the reference code's order).

        D runs twice per step (on ``x`` and ``x'``); each backward pass goes only to the
        parameters its optimiser owns (``inputs=``), and D's update reuses the forward pass on
        ``x'`` (D's weights have not changed since). anomalib runs D three times and computes
        D's gradients of the generator loss only to discard them; the updates are the same.
        """
        self._check_input(x)
        self.train()
        opt_g, opt_d = optimizers["generator"], optimizers["discriminator"]
        gen = self.generator(x)
        real: DiscriminatorOutput = self.discriminator(x)
        fake: DiscriminatorOutput = self.discriminator(gen.reconstruction)
        g = generator_losses(x, gen, real.features, fake.features, self.config)

        opt_g.zero_grad(set_to_none=True)
        g_params = [p for p in self.generator.parameters() if p.requires_grad]
        backward(g.total, opt_g, inputs=g_params, retain_graph=True)  # keeps D(x') for L_D; fp16-scaled
        opt_g.step()

        loss_d = discriminator_loss(real.logit, fake.logit)
        opt_d.zero_grad(set_to_none=True)
        d_params = [p for p in self.discriminator.parameters() if p.requires_grad]
        backward(loss_d, opt_d, inputs=d_params)
        opt_d.step()

        values = torch.stack([g.total, g.adv, g.con, g.enc, loss_d]).detach().tolist()  # one sync
        losses = dict(zip(("loss_g", "loss_adv", "loss_con", "loss_enc", "loss_d"), values))
        if self._discriminator_collapsed(losses["loss_d"], x.device):
            self.reinit_discriminator()
        return losses

    def _discriminator_collapsed(self, loss_d: float, device: torch.device) -> bool:
        """Whether D's loss collapsed. Under torchrun every rank follows rank 0's decision and,
        after a re-initialisation, takes rank 0's fresh D weights, so the replicas stay equal."""
        collapsed = loss_d < self.d_reinit_below
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return collapsed
        flag = torch.tensor([float(collapsed)], device=device)
        torch.distributed.broadcast(flag, src=0)
        return bool(flag.item())

    def reinit_discriminator(self) -> None:
        """Fresh DCGAN weights for D (as the reference code does when D's loss collapses)."""
        self.discriminator.apply(dcgan_init)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for tensor in [*self.discriminator.parameters(), *self.discriminator.buffers()]:
                torch.distributed.broadcast(tensor.data, src=0)
        self.d_reinit_count += 1
        log.warning("ganomaly: discriminator loss collapsed below %g; re-initialised D (%d so far)",
                    self.d_reinit_below, self.d_reinit_count)

    @torch.no_grad()
    def validation_loss(self, x: Tensor) -> Tensor:
        """Per-sample ``w_con * L_con + w_enc * L_enc`` ``(B,)``: reconstruction quality on
        healthy validation data. D is left out: its loss says who wins the game, not how well
        healthy anatomy is modelled."""
        self._check_input(x)
        with self._inference():
            gen = self.generator(x)
        con = (gen.reconstruction.float() - x.float()).abs().flatten(1).mean(1)
        enc = (gen.latent_out.float() - gen.latent_in.float()).pow(2).flatten(1).mean(1)
        return self.config.w_con * con + self.config.w_enc * enc

    @torch.no_grad()
    def infer(self, x: Tensor) -> ModelOutput:
        """Eval-mode outputs; ``image_score = mean((z - z')^2)`` per sample."""
        self._check_input(x)
        with self._inference():
            gen = self.generator(x)
            real = self.discriminator(x)
            fake = self.discriminator(gen.reconstruction)
        score = (gen.latent_in.float() - gen.latent_out.float()).pow(2).flatten(1).mean(1)
        return ModelOutput(
            x=x,
            reconstruction=gen.reconstruction,
            latent_in=gen.latent_in,
            latent_out=gen.latent_out,
            disc_features_real=real.features,
            disc_features_fake=fake.features,
            image_score=score,
        )

    # -- helpers --------------------------------------------------------------------------------
    @contextmanager
    def _inference(self) -> Iterator[None]:
        """Eval mode (running statistics), or with ``eval_batch_stats`` the batch's statistics
        without touching the running ones; the previous train/eval mode is restored."""
        was_training = self.training
        saved: list[tuple[Tensor, Tensor]] = []
        if self.config.eval_batch_stats:
            self.train()
            saved = [(b, b.clone()) for m in self.modules()
                     if isinstance(m, nn.modules.batchnorm._BatchNorm) for b in m.buffers()]
        else:
            self.eval()
        try:
            yield
        finally:
            for buffer, value in saved:
                buffer.copy_(value)
            self.train(was_training)

    def _check_input(self, x: Tensor) -> None:
        c = self.config
        expected = (c.in_channels,) + (c.image_size,) * c.spatial_dims
        if x.dim() != 2 + c.spatial_dims or tuple(x.shape[1:]) != expected:
            raise DataError(
                f"ganomaly: expected input (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}; "
                "match the sampler's patch/slice size and modalities to the model's image_size "
                "and in_channels"
            )
