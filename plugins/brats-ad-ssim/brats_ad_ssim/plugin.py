"""The hook implementation brats-ad finds through the entry point ``ssim``.

It only *names* the scorer: the factory is the string ``"brats_ad_ssim.scorer:SSIMScorer"``,
imported when a benchmark cell uses it, so ``brats-ad plugins`` stays fast (no torch here).
"""

from __future__ import annotations

from brats_ad.plugins import hookimpl


@hookimpl
def brats_ad_register_scorers(registry):
    registry.add(
        "ssim",
        "brats_ad_ssim.scorer:SSIMScorer",
        requires={"reconstruction"},
        help="1 - local SSIM between x and its reconstruction x' (Gaussian window, mean over "
        "channels); sample score = mean over the brain",
        params={"kernel_size": 11, "kernel_sigma": 1.5, "data_range": 2.0,
                "postprocess": {"erode_brain": 0, "median_size": 0, "fill": "min"}},
    )
