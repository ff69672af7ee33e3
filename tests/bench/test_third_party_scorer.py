"""The example third-party scorer (plugins/brats-ad-ssim), installed as a distribution, used in a
bench cell exactly like a built-in: the journey of a student adding a scorer."""

from __future__ import annotations

import pytest

from brats_ad.plugins import load_registries, make_plugin_manager

from test_runner import rows, run, write_config

pytestmark = pytest.mark.slow


def test_installed_ssim_scorer_runs_in_a_bench_cell(tmp_path, tiny_data, monkeypatch):
    pytest.importorskip(
        "brats_ad_ssim", reason="install the example plugin: pip install -e plugins/brats-ad-ssim (README test command)"
    )
    monkeypatch.delenv("BRATS_AD_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    registries = load_registries(make_plugin_manager())  # through the real entry point
    entry = registries.scorers.get("ssim")
    assert entry.source.distribution == "brats-ad-ssim"

    path = write_config(tmp_path, tiny_data, edit=lambda raw: raw + '\n[[scorers]]\nname = "ssim"\n')
    rc, text = run(path, registries)
    assert rc == 0, text
    got = {(r["model"], r["scorer"]): r for r in rows(tmp_path / "out")}
    cell = got[("ae", "ssim")]
    assert cell["status"] == "done" and 0.0 <= cell["metrics"]["voxel_auroc_score"] <= 1.0
    assert cell["versions"]["plugins"].get("brats-ad-ssim") == "0.1.0"
    assert "dropped flair-threshold x ssim (2D): scorer requires reconstruction" in text
    # the AE was trained once and shared by its scorers: one checkpoint for both cells
    assert got[("ae", "residual")]["artifacts"]["checkpoint"] == cell["artifacts"]["checkpoint"]
