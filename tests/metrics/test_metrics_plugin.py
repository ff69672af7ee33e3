"""The built-in metrics plugin registers every metric, lazily, with direction-carrying names."""

from __future__ import annotations

import subprocess
import sys

import brats_ad.metrics.plugin as metrics_plugin
from brats_ad.plugins import PluginManager
from brats_ad.registry import Registry, Source

EXPECTED = {
    "voxel_auroc_score",
    "voxel_auprc_score",
    "dice_valbest_score",
    "dice_healthyq_score",
    "oracle_dice_score",
    "sample_auroc_score",
    "sample_auprc_score",
}


def test_registers_every_metric_with_a_score_suffix():
    registry = Registry("metrics")
    metrics_plugin.brats_ad_register_metrics(registry)
    assert set(registry.names()) == EXPECTED
    for entry in registry:
        assert entry.name.endswith("_score")  # higher is better
        metric = entry.create()
        assert callable(metric)


def test_hook_runs_through_a_fresh_manager():
    pm = PluginManager()
    pm.register_plugin(metrics_plugin, "brats_ad.metrics.plugin", Source("brats_ad.metrics.plugin", "brats-ad", None))
    registry = Registry("metrics")
    pm.hook.brats_ad_register_metrics(registry=registry)
    assert set(registry.names()) == EXPECTED


def test_listing_metrics_imports_no_numpy_or_sklearn():
    code = (
        "import sys, brats_ad.metrics, brats_ad.metrics.plugin as p; from brats_ad.registry import Registry; "
        "p.brats_ad_register_metrics(Registry('metrics')); "
        "print(sorted(m for m in ('numpy', 'sklearn', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
