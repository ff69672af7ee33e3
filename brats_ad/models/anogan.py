"""AnoGAN (Schlegl et al. 2017) and f-AnoGAN (Schlegl et al. 2019), 2D and 3D.

References: Schlegl et al., "Unsupervised anomaly detection with generative adversarial networks
to guide marker discovery", IPMI 2017, doi:10.1007/978-3-319-59050-9_12; Schlegl et al.,
"f-AnoGAN: fast unsupervised anomaly detection with generative adversarial networks", Medical
Image Analysis 54, 2019, doi:10.1016/j.media.2019.01.010.

Training (two phases in one ``train_step``; the loop calls it once per healthy batch and cannot
see phases, so the model counts its own steps in the ``step`` buffer, saved in checkpoints):

1. steps ``[0, gan_steps)``: a DCGAN trained as a WGAN-GP (as f-AnoGAN; Gulrajani et al. 2017):
   every step updates the critic D on ``D(G(z)) - D(x) + gp_weight * GP``; every ``n_critic``-th
   step also updates the generator G on ``-D(G(z))``. z ~ N(0, I).
2. steps ``[gan_steps, gan_steps + encoder_steps)``: G and D frozen (G in eval mode), the encoder
   E is trained with f-AnoGAN's izi_f loss
   ``A(x) = mean (x - G(E(x)))^2 + kappa * mean (f(x) - f(G(E(x))))^2``, f = D's features.
3. afterwards ``training_complete`` is True and ``train_step`` only reports the izi_f loss.

``validation_loss`` is the izi_f residual per sample; it means something only once the encoder
trains, so ``validation_ready`` (False during phase 1) tells the loop when to start early
stopping and model selection.

Inference: ``inference="encoder"`` (f-AnoGAN, fast; z = E(x), A(x) = izi_f) or
``"latent_optimisation"`` (AnoGAN: ``steps`` Adam iterations on z minimising
``(1 - lambda) * mean|x - G(z)| + lambda * mean|f(x) - f(G(z))|``, lambda = ``latent_lambda``;
A(x) is that loss at the final z). Both return reconstruction G(z), latent_in z,
latent_out E(G(z)), D's features of x and of G(z), and image_score A(x).

Networks: GANomaly's N-d DCGAN blocks (:mod:`brats_ad.models.ganomaly_nets`) with a plain
stride-2 stem; the critic's batch norms become layer norms (``GroupNorm(1, C)``) because the
gradient penalty is per sample and batch norm mixes samples (Gulrajani et al. 2017, sec. 4).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor, nn

from brats_ad.errors import ConfigError, DataError
from brats_ad.models.ganomaly_nets import Decoder, Discriminator, Encoder
from brats_ad.models.layers import dcgan_init
from brats_ad.models.output import ModelOutput
from brats_ad.train.device import backward

_INFERENCE = ("encoder", "latent_optimisation")
_LATENT_INIT = ("random", "encoder")


@dataclass(frozen=True)
class AnoGANConfig:
    """Hyper-parameters of :class:`AnoGAN` (JSON-safe; saved in checkpoints)."""

    spatial_dims: int
    in_channels: int = 1
    image_size: int = 64  # edge of the square/cubic slice or patch: a power of 2, >= 8
    latent_size: int = 128
    width: int = 64  # channels of the first convolution; doubles per stride-2 layer
    gan_steps: int = 20_000  # phase 1: WGAN-GP steps (critic updates)
    encoder_steps: int = 10_000  # phase 2: izi_f encoder steps
    n_critic: int = 5  # critic updates per generator update
    gp_weight: float = 10.0
    kappa: float = 1.0  # weight of the feature residual in izi_f
    lr: float = 1e-4  # G and D (WGAN-GP's Adam settings)
    beta1: float = 0.0
    beta2: float = 0.9
    encoder_lr: float = 1e-4  # E, Adam with default betas
    inference: str = "encoder"  # "encoder" (f-AnoGAN) or "latent_optimisation" (AnoGAN)
    steps: int = 50  # latent optimisation iterations
    latent_lambda: float = 0.1  # weight of the feature residual in AnoGAN's loss
    latent_lr: float = 0.05
    latent_init: str = "random"  # "random" (AnoGAN, seeded by ``seed``) or "encoder"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"anogan: spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        size = self.image_size
        if size < 8 or size & (size - 1):
            raise ConfigError(f"anogan: image_size must be a power of 2 and >= 8, got {size}; crop/pad the slices or patches")
        for name in ("in_channels", "latent_size", "width", "n_critic"):
            if getattr(self, name) < 1:
                raise ConfigError(f"anogan: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("gan_steps", "encoder_steps", "steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"anogan: {name} must be >= 0, got {getattr(self, name)}")
        if self.inference not in _INFERENCE:
            raise ConfigError(f"anogan: inference must be one of {', '.join(_INFERENCE)}; got {self.inference!r}")
        if self.latent_init not in _LATENT_INIT:
            raise ConfigError(f"anogan: latent_init must be one of {', '.join(_LATENT_INIT)}; got {self.latent_init!r}")
        if not 0.0 <= self.latent_lambda <= 1.0:
            raise ConfigError(f"anogan: latent_lambda must be in [0, 1], got {self.latent_lambda}")


@contextlib.contextmanager
def _frozen(*modules: nn.Module) -> Iterator[None]:
    """No parameter gradients and eval mode for ``modules`` inside the block (restored after)."""
    saved = [(m, m.training, [p.requires_grad for p in m.parameters()]) for m in modules]
    for m in modules:
        m.eval()
        m.requires_grad_(False)
    try:
        yield
    finally:
        for m, training, flags in saved:
            m.train(training)
            for p, flag in zip(m.parameters(), flags):
                p.requires_grad_(flag)


def _layer_norm_critic(critic: Discriminator) -> Discriminator:
    body = critic.encoder.body
    for i, layer in enumerate(body):
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            body[i] = nn.GroupNorm(1, layer.num_features)  # layer norm over (C, *spatial)
    return critic


def _per_sample_mean(t: Tensor) -> Tensor:
    return t.flatten(1).mean(1)


class AnoGAN(nn.Module):
    """WGAN-GP DCGAN + izi_f encoder; provides reconstruction, latent_pair, disc_features and
    image_score."""

    trainable = True

    def __init__(self, config: AnoGANConfig) -> None:
        super().__init__()
        self.config = config
        sd, c, n, z, w = config.spatial_dims, config.in_channels, config.image_size, config.latent_size, config.width
        self.generator = Decoder(sd, c, n, z, w)  # (B, z, 1..) -> (B, C, n..) in [-1, 1]
        self.critic = _layer_norm_critic(Discriminator(sd, c, n, w, initial_padding=1))
        self.encoder = Encoder(sd, c, n, z, w, initial_padding=1)  # (B, C, n..) -> (B, z, 1..)
        self.apply(dcgan_init)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # optimisation steps so far
        self._last_generator_loss = 0.0

    @classmethod
    def from_params(cls, **params: Any) -> "AnoGAN":
        """The registry factory: build from the config's fields as keyword arguments."""
        return cls(AnoGANConfig(**params))

    # -- phases ----------------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        """Steps until ``training_complete``: the loop should run at least this many."""
        return self.config.gan_steps + self.config.encoder_steps

    @property
    def validation_ready(self) -> bool:
        """False until the encoder has trained at least one step (or training is complete):
        before that, validation losses say nothing about the encoder."""
        return int(self.step) > self.config.gan_steps or self.training_complete

    @property
    def training_complete(self) -> bool:
        return int(self.step) >= self.total_steps

    # -- pieces ----------------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        cfg = self.config
        expected = (cfg.in_channels,) + (cfg.image_size,) * cfg.spatial_dims
        if x.ndim != cfg.spatial_dims + 2 or tuple(x.shape[1:]) != expected:
            raise DataError(
                f"anogan: expected (B, {', '.join(map(str, expected))}), got shape {tuple(x.shape)}; "
                "set in_channels/image_size to the data's channels and slice/patch size"
            )

    def sample_latent(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, I), ``(batch, latent_size, 1, 1[, 1])``."""
        shape = (batch, self.config.latent_size) + (1,) * self.config.spatial_dims
        if generator is None:
            return torch.randn(shape, device=device)
        return torch.randn(shape, generator=generator).to(device)  # a CPU generator: same z on any device

    def izi_f(self, x: Tensor, z: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(A(x), image residual, feature residual)`` per sample for z = E(x) (or given z)."""
        z = self.encoder(x) if z is None else z
        rec = self.generator(z)
        image = _per_sample_mean((rec.float() - x.float()).square())
        feature = _per_sample_mean((self.critic(rec).features.float() - self.critic(x).features.float()).square())
        return image + self.config.kappa * feature, image, feature

    def anogan_loss(self, x: Tensor, z: Tensor) -> Tensor:
        """AnoGAN's per-sample loss ``(1 - lambda) * mean|x - G(z)| + lambda * mean|f(x) - f(G(z))|``."""
        lam = self.config.latent_lambda
        rec = self.generator(z)
        residual = _per_sample_mean((x.float() - rec.float()).abs())
        feature = _per_sample_mean((self.critic(x).features.float() - self.critic(rec).features.float()).abs())
        return (1.0 - lam) * residual + lam * feature

    def optimise_latent(self, x: Tensor, steps: int | None = None) -> tuple[Tensor, Tensor, list[float]]:
        """AnoGAN's search for z with G(z) ~ x: ``(z, final loss (B,), mean loss per iteration)``.

        Works under ``no_grad``/``inference_mode`` (it turns gradients on locally) and leaves
        every parameter gradient untouched (only z is differentiated).
        """
        cfg = self.config
        steps = cfg.steps if steps is None else steps
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone()  # a normal tensor even if x was made in inference mode
            if cfg.latent_init == "encoder":
                z0 = self.encoder(x).detach()
            else:
                z0 = self.sample_latent(x.shape[0], x.device, torch.Generator().manual_seed(cfg.seed))
            z = z0.clone().float().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=cfg.latent_lr)  # per-element steps: samples stay independent
            history = []
            for _ in range(steps):
                loss = self.anogan_loss(x, z)  # (B,)
                history.append(loss.mean().item())
                (z.grad,) = torch.autograd.grad(loss.sum(), z)
                opt.step()
            z = z.detach()
            with torch.no_grad():
                final = self.anogan_loss(x, z)
        history.append(final.mean().item())
        return z, final, history

    # -- training --------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg = self.config
        betas = (cfg.beta1, cfg.beta2)
        return {
            "generator": torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=betas),
            "critic": torch.optim.Adam(self.critic.parameters(), lr=cfg.lr, betas=betas),
            "encoder": torch.optim.Adam(self.encoder.parameters(), lr=cfg.encoder_lr),
        }

    def _gradient_penalty(self, real: Tensor, fake: Tensor) -> Tensor:
        """Mean of (||grad D(x_hat)|| - 1)^2 on random interpolates; float32 (autocast off)
        because a second-order gradient in half precision under- or overflows."""
        eps = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), device=real.device)
        x_hat = (eps * real.float() + (1 - eps) * fake.float()).requires_grad_(True)
        with torch.autocast(device_type=real.device.type, enabled=False):
            (grad,) = torch.autograd.grad(self.critic(x_hat).logit.sum(), x_hat, create_graph=True)
        return (grad.flatten(1).norm(2, dim=1) - 1).square().mean()

    def _gan_step(self, x: Tensor, optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, float]:
        cfg = self.config
        with torch.no_grad():
            fake = self.generator(self.sample_latent(x.shape[0], x.device))
        wasserstein = self.critic(x).logit.float().mean() - self.critic(fake).logit.float().mean()
        gp = self._gradient_penalty(x, fake)
        loss_d = -wasserstein + cfg.gp_weight * gp
        optimizers["critic"].zero_grad(set_to_none=True)
        backward(loss_d, optimizers["critic"])
        optimizers["critic"].step()
        if (int(self.step) + 1) % cfg.n_critic == 0:
            with _frozen(self.critic):
                loss_g = -self.critic(self.generator(self.sample_latent(x.shape[0], x.device))).logit.float().mean()
                optimizers["generator"].zero_grad(set_to_none=True)
                backward(loss_g, optimizers["generator"])
                optimizers["generator"].step()
            self._last_generator_loss = loss_g.item()
        # "generator" is the latest generator loss (updated every n_critic steps)
        return {"critic": loss_d.item(), "wasserstein": wasserstein.item(), "gradient_penalty": gp.item(),
                "generator": self._last_generator_loss}

    def _encoder_step(self, x: Tensor, optimizers: Mapping[str, torch.optim.Optimizer], update: bool) -> dict[str, float]:
        with _frozen(self.generator, self.critic):
            if update:
                score, image, feature = self.izi_f(x)
                optimizers["encoder"].zero_grad(set_to_none=True)
                backward(score.mean(), optimizers["encoder"])
                optimizers["encoder"].step()
            else:
                with torch.no_grad():
                    score, image, feature = self.izi_f(x)
        return {"izi_f": score.mean().item(), "image_residual": image.mean().item(),
                "feature_residual": feature.mean().item()}

    def train_step(self, x: Tensor, optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, float]:
        """One step of the current phase (see the module docstring); loss names differ by phase:
        GAN ``critic, wasserstein, gradient_penalty, generator``; encoder ``izi_f,
        image_residual, feature_residual``."""
        self._check_input(x)
        step = int(self.step)
        if step < self.config.gan_steps:
            losses = self._gan_step(x, optimizers)
        else:
            losses = self._encoder_step(x, optimizers, update=step < self.total_steps)
        if step < self.total_steps:
            self.step += 1
        return losses

    def validation_loss(self, x: Tensor) -> Tensor:
        """izi_f per sample ``(B,)`` (see ``validation_ready``)."""
        self._check_input(x)
        return self.izi_f(x)[0]

    # -- inference -------------------------------------------------------------------------------
    def infer(self, x: Tensor) -> ModelOutput:
        """Reconstruction, latents, critic features and A(x), by encoder or latent optimisation."""
        self._check_input(x)
        if self.config.inference == "encoder":
            z = self.encoder(x)  # (B, latent, 1, 1[, 1])
            score = None
        else:
            z, score, _ = self.optimise_latent(x)
        rec = self.generator(z)  # (B, C, *spatial)
        f_real, f_fake = self.critic(x).features, self.critic(rec).features  # (B, F, 4, 4[, 4])
        if score is None:
            image = _per_sample_mean((rec.float() - x.float()).square())
            score = image + self.config.kappa * _per_sample_mean((f_fake.float() - f_real.float()).square())
        return ModelOutput(x=x, reconstruction=rec, latent_in=z, latent_out=self.encoder(rec),
                           disc_features_real=f_real, disc_features_fake=f_fake, image_score=score)
