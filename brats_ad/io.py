"""Atomic file writes: a file is either the old version or the complete new one, never half.

Every writer in the project goes through here (checkpoints, cache metadata, logs, results,
leaderboards, NIfTI maps), so a killed run never leaves a truncated file behind. The temporary
file lives in the target's folder (``os.replace`` is atomic only within one file system), is
fsynced before the rename, and gets the usual umask permissions (``tempfile.mkstemp`` would
leave it readable by its owner only).
"""

from __future__ import annotations

import json
import math
import os
import secrets
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import IO, Any, Iterator, Mapping


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write by file name (``nibabel.save``, ``np.save``, ...);
    it replaces ``path`` when the block exits cleanly and is removed otherwise.

    The temporary name keeps ``path``'s suffixes (``.nii.gz``, ``.npy``) so libraries that
    choose a format from the suffix write the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    tmp = path.with_name(f".{stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: Path | str, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on clean exit flush, fsync and rename it to ``path``."""
    if "w" not in mode:
        raise ValueError(f"atomic_output writes a new file; mode must contain 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        with open(tmp, mode.replace("w", "x"), **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def jsonable(value: Any) -> Any:
    """Plain JSON types for anything the project records (configs, metadata, results, fitted
    statistics): mappings -> dicts with str keys, tuples -> lists, dataclasses -> dicts, numpy
    arrays / scalars and torch tensors -> (nested) Python values, paths -> str, NaN / inf -> None
    (strict JSON has neither), anything else -> its repr."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        return {f: jsonable(getattr(value, f)) for f in value.__dataclass_fields__}
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu()
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy / torch
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    with atomic_output(path, "wb") as fh:
        fh.write(data)


def write_text_atomic(path: Path | str, text: str) -> None:
    with atomic_output(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def write_json_atomic(path: Path | str, payload: Any, *, indent: int | None = 1, sort_keys: bool = True) -> None:
    """Write ``jsonable(payload)`` as strict JSON (NaN and inf become null) atomically."""
    text = json.dumps(jsonable(payload), indent=indent, sort_keys=sort_keys, allow_nan=False)
    write_text_atomic(path, text + "\n")
