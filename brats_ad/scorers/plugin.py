"""Built-in scorers, registered through the same hook third parties use.

Every scorer's factory is its class; the class checks ``params`` in ``__init__``, and ``requires``
below equals the class's own ``requires`` (a test keeps them in step). Every scorer takes the
common ``postprocess`` parameter (median filter and eroded brain mask, Baur et al. 2021; see
:mod:`brats_ad.scorers.postprocess`), off by default and recorded with the other parameters.

This module must not import torch: listing plugins stays fast.
"""

from __future__ import annotations

from typing import Any

from brats_ad.plugins import hookimpl
from brats_ad.registry import Registry


def _postprocess() -> dict[str, Any]:
    return {"erode_brain": 0, "median_size": 0, "fill": "min"}


@hookimpl
def brats_ad_register_scorers(registry: Registry) -> None:
    registry.add(
        "latent",
        "brats_ad.scorers.latent:Latent",
        requires={"latent_pair"},
        help="L_enc, GANomaly's score: mean over latent elements of (z - z')^2; the map is that "
        "value broadcast over the sample (constant per slice; patch-wise for patch models)",
        params={"postprocess": _postprocess()},
    )
    registry.add(
        "residual",
        "brats_ad.scorers.residual:Residual",
        requires={"reconstruction"},
        help="L_con: per-voxel |x - x'| (power=2: squared), mean over channels or the chosen "
        "ones; sample score = mean over the brain (or of its top_percent %)",
        params={"power": 1, "channels": None, "top_percent": None, "postprocess": _postprocess()},
    )
    registry.add(
        "combined",
        "brats_ad.scorers.combined:Combined",
        requires={"latent_pair", "reconstruction"},
        help="alpha * L_enc + beta * L_con per voxel, each term z-scored on healthy validation "
        "outputs first (fit); sample score = mean over the brain",
        params={"alpha": 1.0, "beta": 1.0, "normalisation": "zscore", "power": 1, "channels": None,
                "postprocess": _postprocess()},
    )
    registry.add(
        "discriminator",
        "brats_ad.scorers.discriminator:DiscriminatorFeatures",
        requires={"disc_features"},
        help="AnoGAN discrimination loss: mean |f(x) - f(x')| of discriminator features per "
        "sample; the map is that value broadcast over the sample",
        params={"power": 1, "postprocess": _postprocess()},
    )
    registry.add(
        "model-map",
        "brats_ad.scorers.model_map:ModelMap",
        requires={"anomaly_map"},
        help="the model's own anomaly map (e.g. flair-threshold) passed through; sample score = "
        "the model's image_score when it has one, else the map's mean over the brain",
        params={"postprocess": _postprocess()},
    )
