from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from brats_ad import __version__
from brats_ad.cli import main

HEAVY = ("torch", "monai", "SimpleITK", "nilearn", "sklearn", "pandas", "matplotlib", "nibabel")


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"brats-ad {__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("plugins", "synth", "prepare"):
        assert command in out


def test_plugins_table_lists_builtins(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich folds long cells in a narrow terminal
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "brats-ad" in out and "components" in out
    for name in ("brats", "healthy", "synthetic", "percentile-scale", "skullstrip"):
        assert name in out
    assert "brats_ad.data.plugin" in out  # the plugin table names each plugin and its hooks


def test_plugins_json_is_machine_readable(capsys):
    assert main(["plugins", "--json", "--kind", "datasets"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["brats_ad_version"] == __version__
    assert {c["kind"] for c in payload["components"]} == {"datasets"}
    brats = next(c for c in payload["components"] if c["name"] == "brats")
    assert brats["factory"] == "brats_ad.data.brats:BratsDataset"
    assert brats["distribution"] == "brats-ad" and brats["version"] == __version__
    assert set(brats) >= {"dims", "provides", "requires", "params", "help", "plugin"}


@pytest.mark.parametrize("argv", [["--help"], ["plugins"], ["plugins", "--json"]], ids=["help", "plugins", "json"])
def test_startup_path_imports_no_heavy_library(argv):
    """`python -X importtime` lists every module imported; none of the heavy ones may appear."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRATS_AD_")}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "brats_ad", *argv],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "brats_ad" in imported  # the probe works
    assert not imported & set(HEAVY), f"start-up imported {sorted(imported & set(HEAVY))}"


def test_errors_are_one_line_with_exit_code_2(capsys, tmp_path):
    code = main(["prepare", "--data", str(tmp_path / "nowhere"), "--cache", str(tmp_path / "c")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nowhere" in err


def test_predict_with_a_missing_checkpoint_is_one_clear_line(capsys, tmp_path):
    code = main(["predict", "--checkpoint", str(tmp_path / "none.pt"), "--case", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error:") and "none.pt" in err


def test_train_with_a_missing_config_is_one_clear_line(capsys, tmp_path):
    code = main(["train", "--config", str(tmp_path / "absent.toml")])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error:") and "absent.toml" in err
