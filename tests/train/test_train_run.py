"""``train_from_config`` end to end on a tiny prepared cache with real built-in models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from brats_ad.errors import ConfigError
from brats_ad.train.checkpoint import load_checkpoint, load_model
from brats_ad.train.run import train_from_config



def _load_factories():
    """tests/data/_data_factories.py, also when only tests/train is collected (not on sys.path)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "data" / "_data_factories.py"
    spec = importlib.util.spec_from_file_location("_train_data_factories", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


write_brats_case = _load_factories().write_brats_case


@pytest.fixture(scope="module")
def regs():
    """Built-in registries, with the model plugin even before it joins BUILTIN_PLUGINS."""
    from importlib import import_module

    from brats_ad.plugins import load_registries, make_plugin_manager
    from brats_ad.registry import Source

    pm = make_plugin_manager(entrypoints=False)
    if not pm.has_plugin("brats_ad.models.plugin"):
        pm.register_plugin(import_module("brats_ad.models.plugin"), "brats_ad.models.plugin",
                           Source("brats_ad.models.plugin", "brats-ad", None))
    return load_registries(pm)


def _config(tmp_path: Path, model: str, params: str, dims: int = 2, extra: str = "") -> Path:
    data = tmp_path / "raw"
    for i in range(5):
        write_brats_case(data, f"BraTS2021_{i:05d}", shape=(24, 24, 16), modalities=("t1", "flair"), rng=i)
    path = tmp_path / "train.toml"
    path.write_text(f"""
[data]
dataset = "brats"
data_dir = "{data}"
cache_dir = "{tmp_path / 'cache'}"
pipeline = [{{name = "orient"}}, {{name = "percentile-scale"}}, {{name = "crop-pad", shape = [16, 16, 16], margin = 0}}]
modalities = ["flair"]
dims = {dims}
slice_size = 16
patch_size = 8
val = 1
test = 1
{extra}
[model]
name = "{model}"
params = {params}

[train]
epochs = 2
batch_size = 4
device = "cpu"
patience = 0

[output]
dir = "{tmp_path / 'run'}"
""")
    return path


@pytest.mark.slow
def test_ganomaly_2d_from_config(tmp_path: Path, regs) -> None:
    path = _config(tmp_path, "ganomaly", "{ width = 8, latent_size = 8, initial_padding = 1 }")
    checkpoint = train_from_config(path, progress=False, registries=regs)
    run = tmp_path / "run"
    assert checkpoint == run / "best.pt"
    ckpt = load_checkpoint(checkpoint)
    assert ckpt["model"] == "ganomaly" and ckpt["config"]["image_size"] == 16 and ckpt["config"]["in_channels"] == 1
    assert set(ckpt["optimizers"]) == {"generator", "discriminator"}
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all("val_loss" in r for r in rows)
    resolved = json.loads((run / "train_config.json").read_text())
    split = json.loads((run / "split.json").read_text())
    assert resolved["split_hash"] == split["hash"] and len(split["test"]) == 1
    assert resolved["train_samples"] > 0 and resolved["val_samples"] > 0

    model = load_model(checkpoint, registries=regs)
    out = model.infer(torch.zeros(2, 1, 16, 16))
    assert out.reconstruction.shape == (2, 1, 16, 16)
    # rerunning resumes: nothing left to train, same checkpoint
    assert train_from_config(path, progress=False, registries=regs) == checkpoint


def test_training_free_threshold_from_config(tmp_path: Path, regs) -> None:
    path = _config(tmp_path, "flair-threshold", "{}")
    checkpoint = train_from_config(path, progress=False, registries=regs)
    assert checkpoint.name == "last.pt"
    ckpt = load_checkpoint(checkpoint)
    assert ckpt["model"] == "flair-threshold" and ckpt["config"]["modalities"] == ["flair"]
    assert json.loads((tmp_path / "run" / "state.json").read_text())["status"] == "no_training"
    assert load_model(checkpoint, registries=regs).config.modalities == ("flair",)


def test_model_params_that_contradict_the_data_are_refused(tmp_path: Path, regs) -> None:
    path = _config(tmp_path, "ganomaly", "{ image_size = 32 }")
    with pytest.raises(ConfigError, match=r"model.params.image_size = 32 but the data gives 16"):
        train_from_config(path, progress=False, registries=regs)
