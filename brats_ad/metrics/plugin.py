"""Built-in metrics, registered through the same hook third parties use.

Names carry direction (``*_score``: higher is better). Factories are lazy ``"module:attr"``
strings; each builds a small callable metric object whose options are its ``params``.
"""

from __future__ import annotations

from brats_ad.plugins import hookimpl
from brats_ad.registry import Registry


@hookimpl
def brats_ad_register_metrics(registry: Registry) -> None:
    registry.add(
        "voxel_auroc_score",
        "brats_ad.metrics.voxel:VoxelAUROC",
        help="voxel AUROC over all brain voxels of the test set, streamed (bounded memory, "
        "certified error bound; equals scikit-learn when the histogram is exact)",
        params={"on_undefined": "raise"},
    )
    registry.add(
        "voxel_auprc_score",
        "brats_ad.metrics.voxel:VoxelAUPRC",
        help="voxel average precision (scikit-learn's step-wise AP) over all brain voxels, streamed",
        params={"on_undefined": "raise"},
    )
    registry.add(
        "dice_valbest_score",
        "brats_ad.metrics.dice:DiceAtThreshold",
        help="per-volume Dice mean on test at the threshold with the best pooled Dice on "
        "validation cases (no test labels choose it)",
        params={"protocol": "best-dice", "q": 0.995, "on_undefined": "raise", "min_component_size": 0},
    )
    registry.add(
        "dice_healthyq_score",
        "brats_ad.metrics.dice:DiceAtThreshold",
        help="per-volume Dice mean on test at the q-quantile (default 99.5th percentile) of healthy "
        "validation voxel scores (no test labels choose it)",
        params={"protocol": "healthy-quantile", "q": 0.995, "on_undefined": "raise", "min_component_size": 0},
    )
    registry.add(
        "oracle_dice_score",
        "brats_ad.metrics.dice:OracleDiceMetric",
        help="ORACLE best pooled Dice over thresholds chosen on the test labels (the literature's "
        "⌈Dice⌉); an upper bound, not a fair score",
        params={"on_undefined": "raise"},
    )
    registry.add(
        "sample_auroc_score",
        "brats_ad.metrics.sample:SampleAUROC",
        help="sample-level AUROC (slice, patch or volume contains tumour), scikit-learn",
        params={"on_undefined": "raise"},
    )
    registry.add(
        "sample_auprc_score",
        "brats_ad.metrics.sample:SampleAUPRC",
        help="sample-level average precision (slice, patch or volume contains tumour), scikit-learn",
        params={"on_undefined": "raise"},
    )
