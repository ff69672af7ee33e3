"""Config parsing and validation: every mistake fails early with a message naming the fix."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from brats_ad.bench.config import default_config_path, load_bench_config, parse_bench_config, validate
from brats_ad.errors import ConfigError, UnknownComponent

CONFIGS = Path(__file__).resolve().parent / "configs"  # reduced test configs


REPO = Path(__file__).resolve().parents[2]


def raw_tiny() -> dict:
    return tomllib.loads((CONFIGS / "tiny.toml").read_text())


def test_packaged_default_equals_benchmarks_copy():
    assert default_config_path().read_text() == (REPO / "benchmarks" / "configs" / "default.toml").read_text()


@pytest.mark.parametrize("name", ["default.toml", "brats2021.toml", "brats2021_flair.toml"])
def test_shipped_configs_parse_and_validate(name, registries):
    cfg = load_bench_config(REPO / "benchmarks" / "configs" / name)
    validate(cfg, registries)
    assert cfg.dims == (2, 3)


def test_default_has_every_builtin_model_and_scorer(registries):
    cfg = load_bench_config(None)
    builtin = {e.name for e in registries.models if e.source.distribution == "brats-ad"}
    assert {m.name for m in cfg.models} == builtin
    builtin = {e.name for e in registries.scorers if e.source.distribution == "brats-ad"}
    assert {s.name for s in cfg.scorers} == builtin


def test_unknown_key_did_you_mean():
    raw = raw_tiny()
    raw["training"]["epoch"] = 3
    with pytest.raises(ConfigError, match=r"unknown key in \[train\] 'epoch'; did you mean 'epochs'\?; allowed: "):
        parse_bench_config(raw)
    raw = raw_tiny()
    raw["evaluatoin"] = {}
    with pytest.raises(ConfigError, match=r"unknown top-level table 'evaluatoin'; did you mean 'evaluation'"):
        parse_bench_config(raw)
    raw = raw_tiny()
    raw["sampler"]["2d"]["sise"] = 16
    with pytest.raises(ConfigError, match=r"'sise'; did you mean 'size'.*allowed: size, min_brain_fraction, margin"):
        parse_bench_config(raw)


def test_unknown_model_and_scorer_list_what_exists(registries):
    raw = raw_tiny()
    raw["models"][1]["name"] = "ganomoly"
    with pytest.raises(UnknownComponent, match=r"no model 'ganomoly'; did you mean 'ganomaly'\? Known: .*ae.*flair-threshold"):
        validate(parse_bench_config(raw), registries)
    raw = raw_tiny()
    raw["scorers"][1]["name"] = "residaul"
    with pytest.raises(UnknownComponent, match=r"no scorer 'residaul'; did you mean 'residual'\? Known: .*latent"):
        validate(parse_bench_config(raw), registries)


def test_unknown_model_parameter(registries):
    raw = raw_tiny()
    raw["models"][1]["params"]["chanels"] = [4]
    with pytest.raises(ConfigError, match=r"model 'ae' \(2D\).*no parameter 'chanels'; did you mean 'channels'"):
        validate(parse_bench_config(raw), registries)


def test_data_decided_model_parameter_is_refused():
    raw = raw_tiny()
    raw["models"][1]["params"]["in_channels"] = 4
    with pytest.raises(ConfigError, match=r"params.in_channels is set from the data.*remove it"):
        parse_bench_config(raw)


def test_incompatible_dims(registries):
    raw = raw_tiny()
    raw["matrix"]["dims"] = [2, 3]
    raw["models"].append({"name": "ae-2d-only", "dims": [3]})
    with pytest.raises(ConfigError, match=r"model 'ae-2d-only' supports dims \[2\], the config asks for 3"):
        validate(parse_bench_config(raw), registries)
    raw = raw_tiny()
    raw["models"][1]["dims"] = [3]
    with pytest.raises(ConfigError, match=r"dims \[3\] include 3, which is not in matrix.dims \[2\]"):
        parse_bench_config(raw)
    raw = raw_tiny()
    raw["matrix"]["dims"] = [4]
    with pytest.raises(ConfigError, match=r"matrix.dims may hold only 2, 3"):
        parse_bench_config(raw)


@pytest.mark.parametrize("bad", [-1.0, "x", float("inf")])
def test_bad_alpha_beta(bad):
    raw = raw_tiny()
    raw["scorers"].append({"name": "combined", "grid": {"alpha": [1.0, bad], "beta": [1.0]}})
    with pytest.raises(ConfigError, match=r"scorers\[2\] \(combined\): grid.alpha values must be finite numbers >= 0"):
        parse_bench_config(raw)


def test_grid_key_must_be_a_scorer_parameter(registries):
    raw = raw_tiny()
    raw["scorers"].append({"name": "combined", "grid": {"alpah": [1.0]}})
    with pytest.raises(ConfigError, match=r"scorer 'combined' has no parameter 'alpah' to put in a grid; did you mean 'alpha'"):
        validate(parse_bench_config(raw), registries)


def test_bad_values_fail_early(registries):
    raw = raw_tiny()
    raw.setdefault("evaluation", {})["min_component_size"] = -3
    with pytest.raises(ConfigError, match=r"evaluation.min_component_size"):
        parse_bench_config(raw)
    for key in ("max_cases", "workers"):
        raw = raw_tiny()
        raw["dataset"][key] = 0
        with pytest.raises(ConfigError, match=rf"dataset.{key} must be an integer >= 1"):
            parse_bench_config(raw)
    with pytest.raises(ConfigError, match=r"--max-cases must be an integer >= 1"):
        parse_bench_config(raw_tiny()).with_overrides(max_cases=0)
    raw = raw_tiny()
    raw["training"]["strategy"] = "healthy"
    with pytest.raises(ConfigError, match=r"training.strategy must be one of tumour-free, healthy-controls"):
        parse_bench_config(raw)
    raw = raw_tiny()
    raw["split"]["val"] = 0
    with pytest.raises(ConfigError, match=r"split.val and split.test must both be > 0"):
        parse_bench_config(raw)
    raw = raw_tiny()
    raw["training"]["strategy"] = "healthy-controls"
    with pytest.raises(ConfigError, match=r"needs a \[training.healthy\] table"):
        parse_bench_config(raw)
    raw = raw_tiny()
    raw["scorers"][1]["params"] = {"power": 3}
    with pytest.raises(ConfigError, match=r"scorer 'residual' .*power must be 1"):
        validate(parse_bench_config(raw), registries)


def test_overrides_and_hash_ignores_paths():
    cfg = parse_bench_config(raw_tiny())
    moved = cfg.with_overrides(data=Path("/elsewhere"), out=Path("/out"))
    assert moved.dataset.root == Path("/elsewhere") and moved.out == Path("/out")
    assert moved.config_hash() == cfg.config_hash()
    raw = raw_tiny()
    raw["training"]["epochs"] = 2
    assert parse_bench_config(raw).config_hash() != cfg.config_hash()


def _case_folder(root: Path, name: str = "BraTS2021_00000") -> Path:
    (root / name).mkdir(parents=True)
    return root


def test_data_alone_reads_real_cases_with_brats_into_their_own_out(tmp_path):
    """`brats-ad bench --data ~/BraTS2021_Training_Data` must not feed real cases to 'synthetic'."""
    import io

    from rich.console import Console

    from brats_ad.bench.resolve import resolve_bench_config

    data = _case_folder(tmp_path / "BraTS2021 Training")
    buf = io.StringIO()
    cfg = resolve_bench_config(None, data=data, console=Console(file=buf, width=300))
    assert cfg.dataset.name == "brats" and cfg.dataset.root == data and dict(cfg.dataset.params) == {}
    assert cfg.out == Path("runs/bench/default-BraTS2021-Training")  # not the synthetic run's folder
    assert cfg.dataset.pipeline == load_bench_config().dataset.pipeline  # the rest of the config is kept
    assert "reading them with the 'brats' dataset plugin" in buf.getvalue()
    assert resolve_bench_config(None, data=data, out=tmp_path / "o").out == tmp_path / "o"


def test_data_with_a_synthetic_manifest_or_an_explicit_dataset_is_left_alone(tmp_path):
    from brats_ad.bench.resolve import resolve_bench_config

    generated = _case_folder(tmp_path / "gen")
    (generated / "synthetic.json").write_text("{}")
    cfg = resolve_bench_config(None, data=generated)
    assert cfg.dataset.name == "synthetic" and cfg.out == load_bench_config().out
    assert dict(cfg.dataset.params) == dict(load_bench_config().dataset.params)
    empty = tmp_path / "new"  # not there yet: synthetic generates into it
    assert resolve_bench_config(None, data=empty).dataset.name == "synthetic"
    real = _case_folder(tmp_path / "real")
    cfg = resolve_bench_config(None, data=real, dataset="healthy")
    assert cfg.dataset.name == "healthy" and dict(cfg.dataset.params) == {}
