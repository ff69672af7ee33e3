"""The train TOML schema: defaults, did-you-mean on unknown keys, clear errors on bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from brats_ad.errors import ConfigError
from brats_ad.train.config import AugmentSettings, TrainSettings, load_train_config, parse_train_config

EXAMPLE = Path(__file__).resolve().parents[2] / "benchmarks" / "configs" / "train_ganomaly_2d.toml"
MINIMAL = {"model": {"name": "ganomaly"}, "output": {"dir": "runs/x"}}


def _with(table: str, **kw):
    raw = {k: dict(v) for k, v in MINIMAL.items()}
    raw.setdefault(table, {}).update(kw)
    return raw


def test_minimal_config_gets_defaults() -> None:
    cfg = parse_train_config(MINIMAL)
    assert cfg.model.name == "ganomaly" and cfg.output_dir == Path("runs/x")
    assert cfg.train == TrainSettings() and cfg.data.dims == 2 and not cfg.train.augmentation.enabled


def test_example_config_parses() -> None:
    cfg = load_train_config(EXAMPLE)
    assert cfg.model.name == "ganomaly" and cfg.data.dataset == "synthetic"
    assert cfg.train.epochs >= 1 and cfg.data.modalities == ("flair",)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**MINIMAL, "trian": {}}, r"unknown top-level table 'trian'; did you mean 'train'\?"),
        (_with("train", epocs=3), r"unknown key in \[train\] 'epocs'; did you mean 'epochs'\?"),
        (_with("data", modalites=["flair"]), r"did you mean 'modalities'\?"),
        (_with("train", augmentation={"flip_probability": 0.5}), r"\[train.augmentation\] 'flip_probability'; did you mean 'flip_prob'"),
        (_with("model", parms={}), r"did you mean 'params'"),
        ({"output": {"dir": "x"}}, r"missing \[model\] table"),
        ({"model": {"name": "ganomaly"}}, r"missing \[output\] table"),
        (_with("train", epochs=0), r"train.epochs must be an integer >= 1, got 0"),
        (_with("train", batch_size="8"), r"train.batch_size must be int, got '8'"),
        (_with("train", device="gpu"), r"train.device must be one of auto, cpu, cuda"),
        (_with("train", amp="bf61"), r"train.amp must be one of .*did you mean 'bf16'"),
        (_with("train", deterministic=1), r"train.deterministic must be bool"),
        (_with("data", dims=4), r"data.dims must be 2 \(slices\) or 3 \(patches\), got 4"),
        (_with("data", val=0), r"data.val is 0: early stopping and model selection need healthy validation"),
        (_with("data", unlabelled="maybe"), r"data.unlabelled must be one of error, skip, healthy"),
        (_with("train", augmentation={"flip_prob": 1.5}), r"augmentation.flip_prob must be a number in \[0.0, 1.0\]"),
        (_with("train", augmentation={"contrast_gamma": [2.0, 1.0]}), r"contrast_gamma must be \[low, high\]"),
    ],
)
def test_bad_configs_say_what_and_how(raw, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_train_config(raw)


def test_patience_zero_means_off_and_file_errors_name_the_file(tmp_path: Path) -> None:
    assert parse_train_config(_with("train", patience=0)).train.patience is None
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochs = 2\n[model]\nname = 'ae'\n[output]\ndir = 'x'\n[data]\ndim = 2\n")
    with pytest.raises(ConfigError, match=rf"train config {bad}: unknown key in \[data\] 'dim'; did you mean 'dims'"):
        load_train_config(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_train_config(broken)
    with pytest.raises(ConfigError, match="not found"):
        load_train_config(tmp_path / "missing.toml")


def test_augmentation_settings_check_values() -> None:
    assert AugmentSettings(flip_axes=(0, 1)).flip_axes == (0, 1)
    with pytest.raises(ConfigError, match="flip_axes must be spatial axes"):
        AugmentSettings(flip_axes=(3,))
