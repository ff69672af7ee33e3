"""Shared bits of the benchmark scripts: interleaved step timing and plain-text tables.

Importable from any script in benchmarks/ (Python puts the script's folder on ``sys.path``).
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Callable, Mapping, Sequence

import torch


def setup_torch(device: str, threads: int | None = None) -> torch.device:
    """The benchmark scripts' common start: CPU threads, cuDNN autotuning on CUDA, seed 0."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    return dev


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(steps: Mapping[str, Callable[[], object]], device: torch.device, *, warmup: int,
                repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each function, calls alternating between them.

    Alternating spreads load drift on a shared machine over every variant alike, so their
    ratio stays meaningful even when the absolute figures wobble.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, fn in steps.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A left/right aligned text table (strings left, numbers right)."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) if rows else False for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(list(headers)), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def machine() -> str:
    """One line naming the machine the figures came from."""
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
    return (f"{platform.node()}: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads, {dev}")
