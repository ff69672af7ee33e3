"""``brats-ad bench --dry-run``: the expanded matrix and a cost estimate, without touching data.

The estimate is measured, not guessed: each unit's model is built once and timed on random
input of the training batch shape (one warm-up step, then one timed step), and one inference
batch is timed the same way. Training cost is ``seconds per step x epochs x steps per epoch``;
scoring cost is ``seconds per inference batch x batches`` over the validation and test volumes,
with the volume shape taken from the pipeline's ``crop-pad`` step. Cases are counted from the
dataset parameters (``cases``) or the dataset folder when it exists. It is a rough guide (data
loading, early stopping and the metrics are not in it); the measured warm-ups take seconds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brats_ad.bench.config import BenchConfig, resolved_modalities
from brats_ad.bench.matrix import Matrix, Unit

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

DEFAULT_SHAPE = (192, 192, 160)
#: Fraction of a volume's axial slices that hold enough brain to be sampled / scored.
BRAIN_SLICE_FRACTION = 0.7


def print_plan(cfg: BenchConfig, matrix: Matrix, registries: Any, console: "Console", *, measure: bool = True) -> dict[str, Any]:
    """Print one table row per unit (cells, train steps, estimated seconds); return the totals."""
    from rich.markup import escape
    from rich.table import Table

    shape = volume_shape(cfg)
    n_cases = count_cases(cfg)
    split = split_counts(cfg, n_cases)
    table = Table(title=f"bench {cfg.name}: {len(matrix.cells)} cells, {len(matrix.units)} training units "
                        f"(volume {shape[0]}x{shape[1]}x{shape[2]}, cases {n_cases if n_cases else '?'})")
    for col in ("unit", "scorers", "train steps", "train s", "score s"):
        table.add_column(col, justify="right" if col != "unit" and col != "scorers" else "left")
    total_train = total_score = 0.0
    for unit in matrix.units:
        steps = train_steps(cfg, unit, split["train"], shape)
        step_s, infer_s = measure_unit(cfg, unit, registries) if measure else (math.nan, math.nan)
        if step_s is None:  # nothing to train
            steps, step_s = 0, 0.0
        train_s = step_s * steps if steps is not None else math.nan
        score_s = infer_s * eval_batches(cfg, unit, split["val"] + split["test"], shape)
        total_train += 0.0 if math.isnan(train_s) else train_s
        total_score += 0.0 if math.isnan(score_s) else score_s
        scorers = ", ".join(c.scorer + (f"[{_grid(c)}]" if _grid(c) else "") for c in unit.cells)
        table.add_row(escape(unit.label), escape(scorers), "-" if steps is None else str(steps),
                      _fmt(train_s), _fmt(score_s))
    console.print(table)
    console.print(
        f"estimated total: training {_fmt(total_train)} s + scoring {_fmt(total_score)} s "
        f"= ~{(total_train + total_score) / 60:.1f} min on this machine (data preparation and metrics not included)"
    )
    return {"train_s": total_train, "score_s": total_score, "cells": len(matrix.cells), "units": len(matrix.units)}


def _grid(cell: Any) -> str:
    p = cell.scorer_params
    return ",".join(f"{k}={p[k]:g}" for k in ("alpha", "beta") if isinstance(p.get(k), (int, float)))


def _fmt(seconds: float) -> str:
    return "?" if math.isnan(seconds) else f"{seconds:.0f}"


def volume_shape(cfg: BenchConfig) -> tuple[int, int, int]:
    """The processed volume shape: the pipeline's ``crop-pad`` shape, else the BraTS default."""
    spec = cfg.dataset.pipeline
    if isinstance(spec, tuple):
        for step in spec:
            if step.get("name") == "crop-pad" and step.get("shape"):
                return tuple(int(s) for s in step["shape"])  # type: ignore[return-value]
    return DEFAULT_SHAPE


def count_cases(cfg: BenchConfig) -> int | None:
    """Cases the bench will use (roughly: folders count as cases; ``max_cases`` caps them)."""
    n: int | None = None
    if isinstance(cfg.dataset.params.get("cases"), int):
        n = int(cfg.dataset.params["cases"])
    elif cfg.dataset.name == "synthetic":
        n = 24
    elif Path(cfg.dataset.root).is_dir():
        n = sum(1 for p in Path(cfg.dataset.root).iterdir() if p.is_dir() and not p.name.startswith("."))
    if n is not None and cfg.dataset.max_cases is not None:
        n = min(n, cfg.dataset.max_cases)
    return n


def split_counts(cfg: BenchConfig, n_cases: int | None) -> dict[str, int]:
    if not n_cases:
        return {"train": 0, "val": 0, "test": 0}

    def count(size: float | int) -> int:
        return int(round(size * n_cases)) if isinstance(size, float) and size < 1 else int(size)

    val, test = count(cfg.split.val), count(cfg.split.test)
    return {"train": max(n_cases - val - test, 0), "val": val, "test": test}


def samples_per_case(cfg: BenchConfig, dims: int, shape: tuple[int, int, int], *, stride: int | None = None) -> float:
    if dims == 2:
        return shape[2] * BRAIN_SLICE_FRACTION
    size = cfg.samplers[3].size
    step = stride or size
    return math.prod(max(1, math.ceil((n - size) / step) + 1) for n in shape)


def train_steps(cfg: BenchConfig, unit: Unit, n_train: int, shape: tuple[int, int, int]) -> int | None:
    settings = cfg.train_settings(unit.spec, unit.seed)
    per_epoch = settings.steps_per_epoch
    if n_train:
        batches = math.ceil(n_train * samples_per_case(cfg, unit.dims, shape, stride=cfg.samplers[3].stride) / settings.batch_size)
        per_epoch = batches if per_epoch is None else min(per_epoch, batches)
    return None if per_epoch is None else per_epoch * settings.epochs


def eval_batches(cfg: BenchConfig, unit: Unit, n_volumes: int, shape: tuple[int, int, int]) -> int:
    from brats_ad.infer.volume import DEFAULT_BATCH_SIZE

    batch = cfg.evaluation.batch_size or DEFAULT_BATCH_SIZE[unit.dims]
    if unit.dims == 2:
        per_volume = shape[2] * BRAIN_SLICE_FRACTION
    else:
        size = cfg.samplers[3].size
        step = max(1, int(size * (1 - cfg.evaluation.overlap)))
        per_volume = math.prod(max(1, math.ceil((n - size) / step) + 1) for n in shape)
    return math.ceil(n_volumes * per_volume / batch)


def measure_unit(cfg: BenchConfig, unit: Unit, registries: Any) -> tuple[float | None, float]:
    """``(seconds per training step, seconds per inference batch)`` on random input; the step
    time is None for a model that does not train (the FLAIR threshold)."""
    import torch

    from brats_ad.infer.volume import DEFAULT_BATCH_SIZE
    from brats_ad.train.device import LoopOptimizer, select_device
    from brats_ad.train.gpu import timed as device_timed

    settings = cfg.train_settings(unit.spec, unit.seed)
    device = select_device(settings.device)
    entry = registries.models.get(unit.model)
    model = entry.load()(**unit.model_params).to(device)
    channels = len(resolved_modalities(cfg, registries))
    size = cfg.samplers[unit.dims].size
    gen = torch.Generator().manual_seed(0)

    def batch(n: int) -> torch.Tensor:
        return (torch.rand((n, channels) + (size,) * unit.dims, generator=gen) * 2 - 1).to(device)

    def timed(fn: Any) -> float:
        fn()  # warm-up (allocations, cudnn autotuning)
        return device_timed(fn, device)

    step_s = None
    if getattr(model, "trainable", True):
        optimizers = {k: LoopOptimizer(o, None, k) for k, o in dict(model.configure_optimizers()).items()}
        x = batch(settings.batch_size)
        model.train()
        step_s = timed(lambda: model.train_step(x, optimizers))
    model.eval()
    xe = batch(cfg.evaluation.batch_size or DEFAULT_BATCH_SIZE[unit.dims])
    with torch.inference_mode(mode=False):
        infer_s = timed(lambda: model.infer(xe))
    return step_s, infer_s
