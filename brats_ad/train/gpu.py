"""GPU throughput helpers: channels-last memory layout, optional ``torch.compile``, busy sampling.

Each helper degrades to a no-op where it cannot help (CPU, a torch without ``compile``, no
NVML and no ``nvidia-smi``), so the training loop and the benchmark scripts call them
unconditionally and results stay the same, only slower.

* :func:`to_channels_last` -- 4-D / 5-D tensors and modules to ``channels_last`` /
  ``channels_last_3d`` (cuDNN's fast layout for convolutions under bf16).
* :func:`compile_submodules` -- compile a model's child networks *in place*
  (``nn.Module.compile``): parameter names and ``state_dict`` keys stay as they are, so
  checkpoints and ``train_step`` methods are unaffected.
* :class:`BusySampler` -- samples the GPU's busy percentage in a background thread while a
  block runs (steady-state training), for the "data loading is never the bottleneck" goal.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import subprocess
import threading
import time
from typing import Any, Callable, TypeVar

import torch
from torch import nn

__all__ = ["BusySampler", "compile_available", "compile_submodules", "memory_format", "timed", "to_channels_last"]

log = logging.getLogger(__name__)
T = TypeVar("T", torch.Tensor, nn.Module)


# -- channels last ---------------------------------------------------------------------------------
def memory_format(spatial_dims: int) -> torch.memory_format:
    """``channels_last`` for 2D (4-D tensors), ``channels_last_3d`` for 3D (5-D tensors)."""
    if spatial_dims == 2:
        return torch.channels_last
    if spatial_dims == 3:
        return torch.channels_last_3d
    raise ValueError(f"channels-last needs 2 or 3 spatial dims, got {spatial_dims!r}")


def to_channels_last(obj: T, spatial_dims: int | None = None) -> T:
    """``obj`` in channels-last layout; values are unchanged, only strides differ.

    A tensor's layout follows its rank (4-D -> ``channels_last``, 5-D -> ``channels_last_3d``;
    other ranks are returned as they are). A module needs ``spatial_dims`` (its convolution
    weights have that rank + 2); it is converted in place and returned.
    """
    if isinstance(obj, torch.Tensor):
        if obj.ndim in (4, 5):
            return obj.contiguous(memory_format=memory_format(obj.ndim - 2))
        return obj
    if isinstance(obj, nn.Module):
        if spatial_dims is None:
            raise ValueError("to_channels_last(module) needs spatial_dims (2 or 3)")
        # Only tensors of the layout's rank (conv weights) change; Module.to(memory_format=)
        # would also try 4-D tensors under channels_last_3d and fail, hence _apply.
        fmt, rank = memory_format(spatial_dims), spatial_dims + 2
        return obj._apply(lambda t: t.contiguous(memory_format=fmt) if t.ndim == rank else t)
    raise TypeError(f"to_channels_last expects a tensor or a module, got {type(obj).__name__}")


# -- torch.compile ---------------------------------------------------------------------------------
_PROBE: dict[str, bool] = {}


def compile_available(device: torch.device | str = "cpu", *, probe: bool = True) -> bool:
    """Whether ``torch.compile`` can run here (checked once per device type, then cached).

    Without ``probe`` only the API is checked. With it a two-op function is compiled and run,
    which catches a missing C compiler or an unsupported Python before a long training run
    fails on its first step (costs a few seconds once).
    """
    if not hasattr(torch, "compile") or not hasattr(nn.Module, "compile"):
        return False
    if not probe:
        return True
    kind = torch.device(device).type
    if kind not in _PROBE:
        try:
            fn = torch.compile(lambda t: torch.relu(t) * 2.0)
            fn(torch.ones(4, device=kind))
            _PROBE[kind] = True
        except Exception as exc:  # noqa: BLE001 -- any failure means "run eagerly"
            log.warning("torch.compile unavailable on %s (%s: %s); training runs eagerly",
                        kind, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            _PROBE[kind] = False
    return _PROBE[kind]


def compile_submodules(model: nn.Module, *, device: torch.device | str = "cpu", mode: str | None = None,
                       probe: bool = True) -> list[str]:
    """Compile ``model``'s direct child networks in place; returns the names compiled.

    Models own ``train_step`` (several optimisers, ``autograd.backward(..., inputs=)``,
    ``.tolist()`` syncs), which graph capture would break into pieces or reject; their
    networks (GANomaly's generator and discriminator, an AE's encoder / decoder) are plain
    forward passes and compile cleanly. ``nn.Module.compile`` keeps parameter names, so
    ``state_dict`` keys and checkpoints are the same as eager. Children without parameters are
    skipped. When compile is unavailable nothing changes and ``[]`` is returned.
    """
    if not compile_available(device, probe=probe):
        return []
    names = []
    kwargs: dict[str, Any] = {"mode": mode} if mode else {}
    for name, child in model.named_children():
        if any(True for _ in child.parameters()):
            child.compile(**kwargs)
            names.append(name)
    return names


# -- GPU busy fraction -----------------------------------------------------------------------------
def _nvml_reader(index: int) -> Callable[[], float] | None:
    try:
        torch.cuda.utilization(index)  # needs pynvml (or amdsmi); raises without it
    except Exception:  # noqa: BLE001
        return None
    return lambda: float(torch.cuda.utilization(index))


def _smi_reader(index: int) -> Callable[[], float] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    argv = [exe, f"--id={index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]

    def read() -> float:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=True).stdout
        return float(out.strip().splitlines()[0])

    try:
        read()
    except Exception:  # noqa: BLE001
        return None
    return read


class BusySampler:
    """Samples GPU utilisation (% of time a kernel ran) every ``interval`` s while in the block.

    Reads ``torch.cuda.utilization`` (NVML) or, without pynvml, ``nvidia-smi``. NVML's figure is
    itself averaged over its own sample window (1/6 s to 1 s), so keep the block several
    seconds long. ``busy`` is the mean over samples as a fraction in [0, 1]; ``None`` when no
    reader exists (CPU-only machine) -- ``source`` says which reader ran.

        with BusySampler() as busy:
            train_for_a_while()
        print(busy.busy, busy.source)
    """

    def __init__(self, device: torch.device | str | int | None = None, interval: float = 0.2) -> None:
        self.interval = float(interval)
        self.samples: list[float] = []
        self.source: str | None = None
        self._read: Callable[[], float] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if torch.cuda.is_available():
            dev = torch.device(device if device is not None else "cuda")
            index = dev.index if dev.index is not None else torch.cuda.current_device()
            for name, make in (("nvml", _nvml_reader), ("nvidia-smi", _smi_reader)):
                reader = make(index)
                if reader is not None:
                    self._read, self.source = reader, name
                    break

    @property
    def busy(self) -> float | None:
        return statistics.fmean(self.samples) / 100.0 if self.samples else None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(self._read())  # type: ignore[misc]
            except Exception:  # noqa: BLE001 -- a failed read loses one sample, not the run
                continue

    def __enter__(self) -> "BusySampler":
        if self._read is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="gpu-busy-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._thread = None


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds ``fn()`` took, with the device synchronised before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
