"""Device and precision choice on CPU (never assumes a GPU), seeding helpers, the optimiser wrapper."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from brats_ad.errors import ConfigError
from brats_ad.train.device import LoopOptimizer, derive_seed, seed_everything, select_device, select_precision


def test_auto_picks_cuda_only_when_present(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    assert select_device("CPU") == torch.device("cpu")
    with pytest.raises(ConfigError, match="sees no CUDA device; use device = \"auto\" or \"cpu\""):
        select_device("cuda")
    with pytest.raises(ConfigError, match="device must be one of auto, cpu, cuda"):
        select_device("tpu")


def test_cpu_runs_in_full_precision() -> None:
    cpu = torch.device("cpu")
    for amp in ("auto", "none"):
        precision = select_precision(cpu, amp)
        assert precision.dtype is None and not precision.use_scaler and precision.make_scaler(cpu) is None
    with pytest.raises(ConfigError, match="amp = 'fp16' needs a CUDA device"):
        select_precision(cpu, "fp16")
    with pytest.raises(ConfigError, match="amp must be one of"):
        select_precision(cpu, "fp8")


def test_seeds_are_reproducible_and_differ_per_epoch() -> None:
    assert derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(0, 2) != derive_seed(1, 1)
    seed_everything(5)
    a = (random.random(), np.random.rand(), torch.rand(1))
    seed_everything(5)
    assert (random.random(), np.random.rand(), torch.rand(1)) == a


def test_loop_optimizer_without_scaler_is_the_optimizer() -> None:
    p = torch.nn.Parameter(torch.ones(2))
    opt = LoopOptimizer(torch.optim.SGD([p], lr=0.5), None, "g")
    opt.zero_grad()
    opt.backward((p ** 2).sum())
    opt.step()
    assert torch.allclose(p.detach(), torch.zeros(2)) and opt.param_groups[0]["lr"] == 0.5
