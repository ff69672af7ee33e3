"""Checkpoints: plain data only (weights_only=True), atomic writes, load_model through the registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _train_models import TensorSet, TinyAE, TinyAEConfig, tiny_registries
from brats_ad.train import CheckpointError
from brats_ad.train.checkpoint import load_checkpoint, load_model, make_checkpoint, save_checkpoint
from brats_ad.train.config import TrainSettings
from brats_ad.train.device import seed_everything
from brats_ad.train.loop import fit

_ALLOWED = (torch.Tensor, str, int, float, bool, type(None))


def _leaves_are_plain(value, where="ckpt") -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, (str, int)), f"{where}: key {k!r}"
            _leaves_are_plain(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _leaves_are_plain(v, f"{where}[{i}]")
    else:
        assert type(value) in _ALLOWED or isinstance(value, torch.Tensor), f"{where}: {type(value).__name__}"


def test_trained_checkpoint_round_trips_with_weights_only(tmp_path: Path) -> None:
    seed_everything(0)
    model = TinyAE(TinyAEConfig(channels=(2, 3)))
    settings = TrainSettings(epochs=1, batch_size=4, device="cpu")
    result = fit(model, TensorSet(8, (1, 16, 16)), TensorSet(4, (1, 16, 16), 1), tmp_path, name="tiny-ae",
                 settings=settings, progress=False)
    raw = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    _leaves_are_plain(raw)
    for key in ("format", "model", "config", "state_dict", "optimizers", "epoch", "best_val", "rng",
                "brats_ad_version", "torch_version"):
        assert key in raw, key
    assert raw["model"] == "tiny-ae" and raw["config"]["channels"] == [2, 3]
    assert "ae" in raw["optimizers"] and raw["optimizers"]["ae"]["state"]

    loaded = load_model(result.checkpoint, registries=tiny_registries())
    assert isinstance(loaded, TinyAE) and not loaded.training
    assert loaded.config == model.config  # lists back to tuples
    x = torch.rand(2, 1, 16, 16)
    model.eval()
    assert torch.equal(loaded(x), model(x))


def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"format": 1, "model": "a", "config": {}, "state_dict": {}}, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint({"format": 1, "model": "b", "config": {}, "state_dict": {}}, path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_unsafe_or_foreign_files_are_refused(tmp_path: Path) -> None:
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": 1, "model": "x", "config": {}, "state_dict": {}, "obj": TinyAEConfig()}, unsafe)
    with pytest.raises(CheckpointError, match="cannot be read safely.*Unsupported global"):
        load_checkpoint(unsafe)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="has format None, expected 1"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_config_must_be_a_dataclass() -> None:
    model = torch.nn.Linear(1, 1)
    model.config = {"lr": 1}  # type: ignore[attr-defined]
    with pytest.raises(CheckpointError, match="must be a dataclass"):
        make_checkpoint(model, "linear")


def test_unknown_model_name_teaches(tmp_path: Path) -> None:
    path = save_checkpoint(make_checkpoint(TinyAE(TinyAEConfig()), "tiny-aee"), tmp_path / "x.pt")
    with pytest.raises(Exception, match="did you mean 'tiny-ae'"):
        load_model(path, registries=tiny_registries())
