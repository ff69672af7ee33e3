"""Built-in model plugins, registered through the same hook third parties use.

Factory convention (the same for every model, built-in or third-party):
    each entry's factory is ``"module:ModelClass.from_params"``, a classmethod taking the
    fields of the model's frozen config dataclass as keyword arguments and returning the
    model (``ModelClass(ConfigClass(**params))``). ``params`` below lists every config field
    with its default, ``spatial_dims`` and ``in_channels`` included (the training code fills
    those two, and ``modalities`` for ``flair-threshold``, from the data config). A checkpoint
    stores ``asdict(model.config)``, so ``from_params(**saved)`` rebuilds the model.

This module must not import torch: listing plugins stays fast.
"""

from __future__ import annotations

from typing import Any

from brats_ad.plugins import hookimpl
from brats_ad.registry import Registry

_RECON = ("reconstruction", "latent_pair")
_GAN = ("reconstruction", "latent_pair", "disc_features", "image_score")


def _autoencoder_params(variant: str) -> dict[str, Any]:
    return {
        "spatial_dims": 2, "in_channels": 1, "variant": variant, "image_size": 128,
        "channels": (32, 64, 128, 256), "strides": (2, 2, 2, 2), "num_res_units": 0,
        "norm": "instance", "latent_size": 128, "loss": "l2", "kl_weight": 1e-3,
        "output_activation": "tanh", "lr": 1e-4, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0,
    }


def _anogan_params(inference: str) -> dict[str, Any]:
    return {
        "spatial_dims": 2, "in_channels": 1, "image_size": 64, "latent_size": 128, "width": 64,
        "gan_steps": 20_000, "encoder_steps": 10_000, "n_critic": 5, "gp_weight": 10.0,
        "kappa": 1.0, "lr": 1e-4, "beta1": 0.0, "beta2": 0.9, "encoder_lr": 1e-4,
        "inference": inference, "steps": 50, "latent_lambda": 0.1, "latent_lr": 0.05,
        "latent_init": "random", "seed": 0,
    }


_GANOMALY_PARAMS: dict[str, Any] = {
    "spatial_dims": 2, "in_channels": 1, "image_size": 128, "latent_size": 100, "width": 64,
    "extra_layers": 0, "add_final_conv": True, "w_adv": 1.0, "w_con": 50.0, "w_enc": 1.0,
    "lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "eval_batch_stats": False, "initial_padding": 4,
}

_THRESHOLD_PARAMS: dict[str, Any] = {
    "spatial_dims": 2, "in_channels": 4, "modalities": ("t1", "t1ce", "t2", "flair"),
    "modality": "flair", "channel": None, "top_percent": 1.0, "background": -1.0,
}


@hookimpl
def brats_ad_register_models(registry: Registry) -> None:
    registry.add(
        "ganomaly",
        "brats_ad.models.ganomaly:Ganomaly.from_params",
        help="GANomaly (Akcay et al. 2018): encoder-decoder-encoder GAN; adversarial, "
        "contextual and latent losses",
        provides=_GAN,
        params=_GANOMALY_PARAMS,
    )
    registry.add(
        "f-anogan",
        "brats_ad.models.anogan:AnoGAN.from_params",
        help="f-AnoGAN (Schlegl et al. 2019): WGAN-GP DCGAN, then an izi_f encoder; fast "
        "encoder inference; gan_steps then encoder_steps",
        provides=_GAN,
        params=_anogan_params("encoder"),
    )
    registry.add(
        "anogan",
        "brats_ad.models.anogan:AnoGAN.from_params",
        help="AnoGAN (Schlegl et al. 2017): the f-AnoGAN networks, scored by optimising z for "
        "'steps' iterations per batch (slow)",
        provides=_GAN,
        params=_anogan_params("latent_optimisation"),
    )
    registry.add(
        "ae",
        "brats_ad.models.autoencoder:AutoEncoderModel.from_params",
        help="convolutional autoencoder (MONAI AutoEncoder); L1/L2 reconstruction loss",
        provides=_RECON,
        params=_autoencoder_params("ae"),
    )
    registry.add(
        "vae",
        "brats_ad.models.autoencoder:AutoEncoderModel.from_params",
        help="variational autoencoder (MONAI VarAutoEncoder); reconstruction + KL loss",
        provides=_RECON,
        params=_autoencoder_params("vae"),
    )
    registry.add(
        "flair-threshold",
        "brats_ad.models.threshold:IntensityThreshold.from_params",
        help="no training: the normalised FLAIR intensity is the anomaly map (Meissen et al. "
        "2021); image score = mean of the top 1% brain values",
        provides=("anomaly_map", "image_score"),
        params=_THRESHOLD_PARAMS,
    )
