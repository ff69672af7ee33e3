"""GPU throughput options on CPU: channels-last, compile fallback, loader options, busy sampler.

None of these needs a GPU: channels-last runs on CPU (same values, other strides), compile is
tested only on its fallback path and its in-place naming (compiling takes > 5 s on CPU), and
the busy sampler reports ``None`` without CUDA.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _train_models import TensorSet, TinyAE, TinyAEConfig
from brats_ad.errors import ConfigError
from brats_ad.train import gpu
from brats_ad.train.config import TrainSettings, parse_train_config
from brats_ad.train.device import seed_everything
from brats_ad.train.gpu import BusySampler, compile_submodules, memory_format, to_channels_last
from brats_ad.train.loop import _loader_options, fit


def _model(dims: int) -> TinyAE:
    seed_everything(0)
    return TinyAE(TinyAEConfig(spatial_dims=dims))


def _data(dims: int, n: int = 8, seed: int = 0) -> TensorSet:
    return TensorSet(n, (1,) + (16,) * dims if dims == 2 else (1,) + (8,) * dims, seed=seed)


# -- channels last -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dims", [2, 3], ids=["2d", "3d"])
def test_to_channels_last_keeps_values_and_changes_strides(dims: int) -> None:
    x = torch.randn((2, 3) + (5,) * dims)
    y = to_channels_last(x)
    assert torch.equal(x, y) and y.is_contiguous(memory_format=memory_format(dims))
    model = to_channels_last(_model(dims), dims)
    weight = model.encoder[0].weight
    assert weight.is_contiguous(memory_format=memory_format(dims))


def test_to_channels_last_leaves_other_ranks_and_rejects_other_types() -> None:
    v = torch.randn(3, 4)
    assert to_channels_last(v) is v
    with pytest.raises(ValueError, match="spatial_dims"):
        to_channels_last(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="tensor or a module"):
        to_channels_last([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("dims", [2, 3], ids=["2d", "3d"])
def test_channels_last_training_matches_the_default_layout(tmp_path: Path, dims: int) -> None:
    weights = []
    for name, cl in (("plain", False), ("cl", True)):
        model = _model(dims)
        settings = TrainSettings(epochs=2, batch_size=4, seed=1, device="cpu", patience=None, channels_last=cl)
        result = fit(model, _data(dims), _data(dims, 4, seed=1), tmp_path / name, name="tiny-ae",
                     settings=settings, progress=False)
        assert result.status == "finished"
        weights.append({k: v.detach().contiguous() for k, v in model.state_dict().items()})
    plain, cl = weights
    assert plain.keys() == cl.keys()
    for key in plain:  # same maths, other summation order: equal within float tolerance
        torch.testing.assert_close(cl[key], plain[key], rtol=1e-4, atol=1e-5)


# -- compile -----------------------------------------------------------------------------------------
def test_compile_submodules_keeps_state_dict_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "compile_available", lambda *a, **k: True)
    model = _model(2)
    keys = list(model.state_dict())
    compiled = compile_submodules(model)  # lazy: nothing is compiled until the first forward
    assert compiled == ["encoder", "decoder"]
    assert list(model.state_dict()) == keys


def test_compile_falls_back_to_eager_when_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no C compiler")

    monkeypatch.setattr(gpu, "_PROBE", {})
    monkeypatch.setattr(torch, "compile", broken)
    assert not gpu.compile_available("cpu")
    model = _model(2)
    assert compile_submodules(model) == []
    settings = TrainSettings(epochs=1, batch_size=4, seed=1, device="cpu", patience=None, compile=True)
    result = fit(model, _data(2), _data(2, 4, seed=1), tmp_path / "run", name="tiny-ae", settings=settings,
                 progress=False)
    assert result.status == "finished"


# -- settings and loader options ---------------------------------------------------------------------
def test_new_train_keys_parse_from_toml_tables() -> None:
    cfg = parse_train_config({
        "model": {"name": "ganomaly"}, "output": {"dir": "out"},
        "train": {"channels_last": True, "compile": True, "num_workers": 2, "prefetch_factor": 4,
                  "pin_memory": False, "persistent_workers": False},
    })
    t = cfg.train
    assert (t.channels_last, t.compile, t.prefetch_factor, t.pin_memory, t.persistent_workers) == (True, True, 4, False, False)
    with pytest.raises(ConfigError, match="channels_last"):
        parse_train_config({"model": {"name": "x"}, "output": {"dir": "o"}, "train": {"channels_last": 1}})


def test_prefetch_factor_needs_workers() -> None:
    with pytest.raises(ConfigError, match="num_workers"):
        TrainSettings(prefetch_factor=4)
    with pytest.raises(ConfigError, match="prefetch_factor"):
        TrainSettings(num_workers=2, prefetch_factor=0)


def test_loader_options_default_by_device_and_workers() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _loader_options(TrainSettings(), cpu) == {"num_workers": 0, "pin_memory": False}
    assert _loader_options(TrainSettings(), cuda) == {"num_workers": 0, "pin_memory": True}
    opts = _loader_options(TrainSettings(num_workers=4, prefetch_factor=3), cuda)
    assert opts == {"num_workers": 4, "pin_memory": True, "persistent_workers": True, "prefetch_factor": 3}
    opts = _loader_options(TrainSettings(num_workers=2, persistent_workers=False, pin_memory=False), cuda)
    assert opts == {"num_workers": 2, "pin_memory": False, "persistent_workers": False}


@pytest.mark.slow
def test_training_with_persistent_workers_runs(tmp_path: Path) -> None:
    settings = TrainSettings(epochs=2, batch_size=4, seed=1, device="cpu", patience=None, num_workers=1,
                             prefetch_factor=2)
    result = fit(_model(2), _data(2), _data(2, 4, seed=1), tmp_path / "w", name="tiny-ae", settings=settings,
                 progress=False)
    assert result.status == "finished"


# -- busy sampler ------------------------------------------------------------------------------------
def test_busy_sampler_reports_none_without_a_reader() -> None:
    sampler = BusySampler()
    sampler._read, sampler.source = None, None  # as on a CPU-only machine
    with sampler as busy:
        pass
    assert busy.busy is None and busy.samples == []


def test_busy_sampler_averages_samples_from_its_reader() -> None:
    values = iter([50.0, 100.0] + [100.0] * 1000)
    sampler = BusySampler(interval=0.01)
    sampler._read, sampler.source = (lambda: next(values)), "fake"
    with sampler:
        while len(sampler.samples) < 4:
            pass
    assert 0.5 < sampler.busy <= 1.0 and sampler.source == "fake"
