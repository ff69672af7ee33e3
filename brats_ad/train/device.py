"""Where and how precisely training runs: device, mixed precision, and seeding.

One place decides, so every model trains the same way: CUDA when present, else CPU; bf16
autocast on GPUs that support it, else fp16 with a gradient scaler; full precision on CPU.
Seeds are derived per epoch from ``(seed, epoch)``, so a resumed run draws the same random
numbers as an uninterrupted one without replaying earlier epochs.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import numpy as np
import torch

from brats_ad.errors import ConfigError
from brats_ad.train.config import AMP_MODES, DEVICES


def select_device(spec: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cpu"``; ``"cuda"`` / ``"cuda:N"``."""
    if not isinstance(spec, str):
        raise ConfigError(f"device must be one of {', '.join(DEVICES)} (or 'cuda:N'), got {spec!r}")
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {spec!r} requested but torch {torch.__version__} sees no CUDA device; "
                "use device = \"auto\" or \"cpu\", or install a CUDA build of torch"
            )
        try:
            device = torch.device(spec)
        except RuntimeError:
            raise ConfigError(f"device {spec!r} is not a valid CUDA device name; use 'cuda' or 'cuda:N'") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist; "
                "use 'cuda:0' .. 'cuda:{n-1}'"
            )
        return device
    raise ConfigError(f"device must be one of {', '.join(DEVICES)} (or 'cuda:N'), got {spec!r}")


@dataclass(frozen=True)
class Precision:
    """The autocast dtype (``None``: full precision) and whether fp16 loss scaling is on."""

    dtype: torch.dtype | None
    use_scaler: bool

    @property
    def name(self) -> str:
        return {None: "none", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self, device: torch.device) -> ContextManager[Any]:
        """The autocast context for ``device`` (a no-op for full precision)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def make_scaler(self, device: torch.device) -> "torch.amp.GradScaler | None":
        return torch.amp.GradScaler(device.type) if self.use_scaler else None


def select_precision(device: torch.device, amp: str = "auto") -> Precision:
    """bf16 where the GPU supports it, else fp16 + scaler; none on CPU.

    Explicit ``"bf16"`` / ``"fp16"`` on CPU is an error: CPU autocast is slower than fp32 for
    these convolutional models and would only make CPU results differ from GPU ones.
    """
    if amp not in AMP_MODES:
        raise ConfigError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    if amp == "none":
        return Precision(None, False)
    if device.type != "cuda":
        if amp == "auto":
            return Precision(None, False)
        raise ConfigError(
            f"amp = {amp!r} needs a CUDA device but training runs on {device}; "
            "use amp = \"auto\" or \"none\" on CPU"
        )
    bf16_ok = torch.cuda.is_bf16_supported()
    if amp == "bf16" and not bf16_ok:
        raise ConfigError(
            f"amp = 'bf16' requested but {torch.cuda.get_device_name(device)} does not support bfloat16; "
            "use amp = \"fp16\" or \"auto\""
        )
    if amp == "bf16" or (amp == "auto" and bf16_ok):
        return Precision(torch.bfloat16, False)
    return Precision(torch.float16, True)


def derive_seed(seed: int, *salt: int) -> int:
    """A 63-bit seed from ``seed`` and ``salt`` (e.g. the epoch), well mixed by SeedSequence."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *(int(s) & 0xFFFFFFFF for s in salt)])
    return int(state.generate_state(2, dtype=np.uint32).astype(np.uint64) @ np.array([1 << 31, 1], dtype=np.uint64))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # also seeds every CUDA device


def worker_init_fn(worker_id: int) -> None:
    """Seed python and numpy in a DataLoader worker from torch's per-worker seed.

    torch seeds each worker from the loader's generator; numpy and random would otherwise start
    from the same state in every worker (forked) or from entropy (spawned).
    """
    seed = torch.initial_seed() % (2**32)
    random.seed(seed)
    np.random.seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Ask torch / cuDNN for deterministic kernels (slower on GPU; CPU is deterministic anyway)."""
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
    torch.use_deterministic_algorithms(enabled, warn_only=True)


class LoopOptimizer:
    """What ``train_step`` receives for each optimiser: the optimiser plus loss-scaling hooks.

    Every attribute of the wrapped optimiser is reachable (``param_groups``, ``state_dict``...).
    ``backward(loss)`` scales the loss under fp16 (a plain ``loss.backward()`` otherwise) and
    ``step()`` then unscales, skips on inf/NaN gradients and steps. A model that calls
    ``loss.backward()`` itself still trains, without fp16 loss scaling (a warning says so once);
    bf16 and fp32 need no scaling. Use :func:`backward` to write models that work both under
    the loop and with raw optimisers in their own tests.

    ``grad_sync`` (set under torchrun, see :mod:`brats_ad.train.distributed`) is called with the
    optimiser once per step, before unscaling or stepping: it averages gradients across ranks.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        scaler: "torch.amp.GradScaler | None",
        name: str = "",
        grad_sync: "Callable[[torch.optim.Optimizer], None] | None" = None,
    ) -> None:
        self.optimizer = optimizer
        self.name = name
        self._scaler = scaler
        self._scaled = False
        self.used_scaler = False
        self._warned = False
        self._grad_sync = grad_sync
        self._synced = False

    def _sync(self) -> None:
        """Average gradients over ranks once per step (no-op in a single process)."""
        if self._grad_sync is not None and not self._synced:
            self._grad_sync(self.optimizer)
            self._synced = True

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        if self._scaler is None:
            loss.backward(**kwargs)
            return
        self._scaler.scale(loss).backward(**kwargs)
        self._scaled = True

    def unscale(self) -> None:
        """Unscale gradients in place before clipping them (no-op without fp16 scaling)."""
        self._sync()  # clip the averaged gradients, as under DDP
        if self._scaler is not None and self._scaled:
            self._scaler.unscale_(self.optimizer)

    def step(self, closure: Any = None) -> Any:
        if closure is not None and self._grad_sync is not None:
            closure = self._synced_closure(closure)
        else:
            self._sync()
        try:
            return self._step(closure)
        finally:
            self._synced = False  # the next step averages its own gradients

    def _step(self, closure: Any) -> Any:
        if self._scaler is None:
            return self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        if not self._scaled:
            if not self._warned:
                import warnings

                warnings.warn(
                    f"optimiser {self.name!r}: the model called loss.backward() directly, so fp16 loss "
                    "scaling is off for it; call optimizers[name].backward(loss) (or "
                    "brats_ad.train.device.backward) to enable it, or use amp = \"bf16\"/\"none\"",
                    stacklevel=2,
                )
                self._warned = True
            return self.optimizer.step()
        self._scaled = False
        self.used_scaler = True
        return self._scaler.step(self.optimizer)

    def _synced_closure(self, closure: Any) -> Any:
        def synced() -> Any:
            loss = closure()  # recomputes the gradients: average them again
            self._synced = False
            self._sync()
            return loss

        return synced

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


def backward(loss: torch.Tensor, optimizer: Any, **kwargs: Any) -> None:
    """``optimizer.backward(loss)`` when the loop's wrapper provides it, else ``loss.backward()``.

    ``kwargs`` go to ``Tensor.backward`` (``inputs=``, ``retain_graph=``), so a model can send a
    loss to only the parameters its optimiser owns and still get fp16 loss scaling.
    """
    method = getattr(optimizer, "backward", None)
    if callable(method):
        method(loss, **kwargs)
    else:
        loss.backward(**kwargs)
