"""Shared helpers for reading configs: TOML files in, one-line ``ConfigError`` messages out.

Every config schema (``train``, ``bench``) and every registry lookup uses these, so an unknown
key, a wrong type or an out-of-range value reads the same everywhere: what arrived, what is
allowed, and a did-you-mean. This module imports no torch.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from brats_ad.errors import ConfigError


def did_you_mean(name: Any, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest known name, or ``""``."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def read_toml(path: Path | str, what: str) -> dict[str, Any]:
    """Parse a TOML file; a missing file or bad TOML is a ConfigError naming ``what`` and the path."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found; pass an existing TOML file (see benchmarks/configs/)")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path}: invalid TOML ({exc})") from None


def reject_unknown(raw: Mapping[str, Any], known: Iterable[str], what: str) -> None:
    """A ConfigError for the first key of ``raw`` not in ``known``, listing what is allowed."""
    known = list(known)
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown {what} {key!r}{did_you_mean(key, known)}; allowed: {', '.join(known)}")


def typed(name: str, value: Any, typ: Any) -> Any:
    """``value`` if it has type ``typ`` (bools are not ints here), else a ConfigError."""
    types = typ if isinstance(typ, tuple) else (typ,)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        want = " or ".join(getattr(t, "__name__", str(t)) for t in types)
        raise ConfigError(f"{name} must be {want}, got {value!r} ({type(value).__name__})")
    return value


def check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_range(name: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi or math.isnan(value):
        upper = "" if math.isinf(hi) else f", {hi}]"
        raise ConfigError(f"{name} must be a number in [{lo}{upper or ', inf)'}, got {value!r}")
