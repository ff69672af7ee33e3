"""Checkpoints every scorer reuses: weights + config, loadable with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors, dicts, lists and plain scalars only (no pickled classes, no
tuples, no numpy), so loading one never runs code from the file::

    {"format": 1, "model": registry name, "config": asdict(model.config) (JSON-safe),
     "state_dict": ..., "optimizers": {name: state_dict}, "epoch": completed epochs,
     "best_val": float | None, "best_epoch": int | None, "bad_epochs": int, "rng": {...},
     "brats_ad_version": ..., "torch_version": ...}

Writes are atomic (temp file in the same folder, then ``os.replace``): a crash mid-write leaves
the previous file intact.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from brats_ad import __version__
from brats_ad.errors import BratsAdError
from brats_ad.io import atomic_output
from brats_ad.train import CheckpointError

CHECKPOINT_FORMAT = 1
LAST = "last.pt"
BEST = "best.pt"


# -- plain data --------------------------------------------------------------------------------------
def plain(value: Any) -> Any:
    """``value`` with tuples -> lists, numpy -> python / tensors, paths -> str (weights_only-safe)."""
    if isinstance(value, torch.Tensor):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        out = {str(k) if not isinstance(k, (int, str)) else k: plain(v) for k, v in value.items()}
        return out
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool):
        return value
    for typ in (str, int, float):  # subclasses (torch's TorchVersion, IntEnum) would need their class to unpickle
        if isinstance(value, typ):
            return typ(value)
    if isinstance(value, torch.dtype):
        return str(value)
    raise CheckpointError(
        f"cannot store a {type(value).__name__} ({value!r}) in a checkpoint; model configs and "
        "states may hold only numbers, strings, bools, None, lists, dicts and tensors"
    )


def config_dict(config: Any) -> dict[str, Any]:
    """``asdict(config)`` made JSON-safe (tuples become lists)."""
    if not (dataclasses.is_dataclass(config) and not isinstance(config, type)):
        raise CheckpointError(
            f"model.config must be a dataclass instance (saved with the weights), got {type(config).__name__}; "
            "give the model a frozen dataclass config"
        )
    out = plain(dataclasses.asdict(config))
    for key, value in out.items():
        if isinstance(value, torch.Tensor):
            raise CheckpointError(f"model config field {key!r} is a tensor; configs must be JSON-safe values")
    return out


def _state_dict(module_state: Mapping[str, Any]) -> dict[str, Any]:
    """Optimiser states as plain data (Adam's ``betas`` tuple becomes a list; torch accepts both)."""
    return plain(module_state)


# -- random state ------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) random states as tensors and lists."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [int(version), list(internal), gauss],
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only where devices match)."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        ("MT19937", np_state["key"].numpy().astype(np.uint32), int(np_state["pos"]),
         int(np_state["has_gauss"]), float(np_state["cached_gaussian"]))
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# -- write / read ------------------------------------------------------------------------------------
def make_checkpoint(
    model: torch.nn.Module,
    name: str,
    *,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    epoch: int = 0,
    best_val: float | None = None,
    best_epoch: int | None = None,
    bad_epochs: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict of ``model`` (weights copied to CPU, so any machine can load it)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": name,
        "config": config_dict(getattr(model, "config", None)),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizers": {k: _state_dict(opt.state_dict()) for k, opt in (optimizers or {}).items()},
        "epoch": int(epoch),
        "best_val": None if best_val is None else float(best_val),
        "best_epoch": None if best_epoch is None else int(best_epoch),
        "bad_epochs": int(bad_epochs),
        "rng": rng_state(),
        "brats_ad_version": __version__,
        "torch_version": str(torch.__version__),
        **plain(dict(extra or {})),
    }


def save_checkpoint(payload: Mapping[str, Any], path: Path | str) -> Path:
    """Write ``payload`` atomically: temp file in the target folder, fsync, ``os.replace``."""
    path = Path(path)
    with atomic_output(path, "wb") as fh:
        torch.save(dict(payload), fh)
    return path


def load_checkpoint(path: Path | str, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a bad file is a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; train first ('brats-ad train') or fix the path")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [""]
        reason = next((ln for ln in lines if "Unsupported global" in ln), lines[0])
        raise CheckpointError(
            f"checkpoint {path} cannot be read safely ({type(exc).__name__}: {reason}); "
            "it is corrupt or not a brats-ad checkpoint - retrain or restore it"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"checkpoint {path} has format {got!r}, expected {CHECKPOINT_FORMAT}; it was written by "
            "another brats-ad version or tool - retrain with this version"
        )
    for key in ("model", "config", "state_dict"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}; it is incomplete - retrain")
    return ckpt


def _tuples(value: Any) -> Any:
    """Lists back to tuples: model configs are frozen dataclasses, which use tuples."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def build_model(name: str, params: Mapping[str, Any], registries: Any = None) -> torch.nn.Module:
    """Instantiate registry model ``name`` with ``params`` (the factory's keyword arguments)."""
    if registries is None:
        from brats_ad.plugins import get_registries

        registries = get_registries()
    entry = registries.models.get(name)
    return entry.load()(**params)


def load_model(
    path: Path | str, *, device: str | torch.device = "cpu", registries: Any = None
) -> torch.nn.Module:
    """Rebuild the model of a checkpoint through the registry, load its weights, eval mode.

    The registry factory is called with the saved config fields as keyword arguments.
    """
    ckpt = load_checkpoint(path)
    params = _tuples(ckpt["config"])
    try:
        model = build_model(ckpt["model"], params, registries)
    except BratsAdError:
        raise
    except TypeError as exc:
        raise CheckpointError(
            f"checkpoint {path}: model {ckpt['model']!r} cannot be rebuilt from its saved config ({exc}); "
            f"it was saved by brats-ad {ckpt.get('brats_ad_version')} - use that version or retrain"
        ) from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit model {ckpt['model']!r} "
            f"({str(exc).splitlines()[0]}); retrain or use the brats-ad version that wrote it"
        ) from None
    return model.to(device).eval()

