"""``brats-ad bench``: prepare, split, then per training unit train once and score every cell.

Output folder (``[bench] out`` or ``--out``)::

    config.toml             the config as given; bench.json: resolved config, dataset, matrix
    split.json              the patient split manifest (reused; a different split is an error)
    cache/                  preprocessed cases (unless [dataset] cache points elsewhere)
    models/<unit>/          last.pt, best.pt, history.csv, train_config.json, unit.json
    cells/<cell_id>.json    one row per cell (the record); cells/<cell_id>/ curves + gallery
    results.jsonl           every cell row, rebuilt after each cell (see results.py)
    runs/<run_id>.json      one per invocation: the matrix (units and their cells), versions
    jobs.json, jobs/        out-of-process executors (slurm): job ids per unit, job logs

Units run through an executor (``[executor]``, ``--executor``; see brats_ad/bench/executors/):
``local`` runs them here one after another, ``slurm`` submits one job per unit and returns.

Rerunning skips finished cells and reuses trained checkpoints (``models/<unit>/unit.json``
marks a finished training), so a scorer added to the config costs only its scoring. Failed
cells (a diverged GAN, a scorer error) are recorded with their error and retried by a rerun.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from brats_ad import __version__
from brats_ad.bench.config import (
    BenchConfig,
    data_section,
    resolved_modalities,
    stable_hash,
    validate,
)
from brats_ad.bench.matrix import Cell, Matrix, Unit, expand
from brats_ad.bench.results import METRIC_KEYS, SCHEMA_VERSION, ResultsStore
from brats_ad.io import write_json_atomic
from brats_ad.errors import DataError
from brats_ad.progress import progress_bar

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

UNIT_MARKER = "unit.json"


def run_bench(
    config_path: Path | None = None,
    *,
    data: Path | None = None,
    out: Path | None = None,
    dry_run: bool = False,
    progress: bool = True,
    console: "Console | None" = None,
    registries: Any = None,
    executor: str | None = None,
    executor_params: Mapping[str, Any] | None = None,
    registries_factory: Callable[[], Any] | str | None = None,
    dataset: str | None = None,
    max_cases: int | None = None,
) -> int:
    """Run (or with ``dry_run`` only show) the benchmark a TOML config describes.

    ``config_path`` None runs the packaged ``default.toml``; ``data`` / ``dataset`` / ``out``
    override ``[dataset] root`` / ``name`` and ``[bench] out`` (see :func:`resolve_bench_config`
    for what ``--data`` alone does to the synthetic default). Returns 0 when every cell is done, 1 when some
    cells failed (they are recorded in results.jsonl). Config and data errors raise
    :class:`~brats_ad.errors.BratsAdError` before any cell runs.

    ``executor`` / ``executor_params`` override ``[executor]`` (the CLI's ``--executor slurm
    --partition P ...``). An executor that submits jobs returns as soon as they are submitted
    (0 unless some cells are already known to have failed); rerun to collect.
    ``registries_factory`` (a module-level function or ``"module:attr"``) builds the registries
    inside worker processes and jobs; default: the installed plugins.
    """
    from rich.console import Console

    from brats_ad.bench.resolve import resolve_bench_config

    console = console or Console(stderr=True, highlight=False)
    cfg = resolve_bench_config(config_path, data=data, out=out, dataset=dataset, max_cases=max_cases,
                               executor=executor, executor_params=executor_params, console=console)
    return run_config(cfg, dry_run=dry_run, progress=progress, console=console, registries=registries,
                      registries_factory=registries_factory)


def run_config(
    cfg: BenchConfig,
    *,
    dry_run: bool = False,
    progress: bool = True,
    console: "Console",
    registries: Any = None,
    registries_factory: Callable[[], Any] | str | None = None,
) -> int:
    """:func:`run_bench` for a config already resolved (``brats-ad bench`` resolves it once)."""
    if registries is None:
        from brats_ad.plugins import get_registries

        registries = get_registries()
    validate(cfg, registries)
    from brats_ad.bench.executors import make_executor

    runner_executor = make_executor(cfg.executor.name, cfg.executor.params, registries)
    matrix = expand(cfg, registries)
    print_dropped(matrix, console)
    if dry_run:
        from brats_ad.bench.estimate import print_plan

        print_plan(cfg, matrix, registries, console)
        return 0
    if hasattr(runner_executor, "check"):  # e.g. slurm: submitit installed, sbatch on PATH; before any work
        runner_executor.check()
    return BenchRunner(cfg, registries, console=console, progress=progress, executor=runner_executor,
                       registries_factory=registries_factory).run(matrix)


def print_dropped(matrix: Matrix, console: "Console") -> None:
    """One line per reason: the same model x scorer in 2D and 3D, and models dropped for the
    same reason, share a line (8 lines for the default matrix instead of 21)."""
    from rich.markup import escape

    for line in dropped_lines(matrix.dropped):
        console.print(f"[yellow]dropped[/] {escape(line)}")


def dropped_lines(dropped: Any) -> list[str]:
    """``dropped`` grouped for reading, first-seen order kept (see :func:`print_dropped`)."""
    by_pair: dict[tuple, list[int]] = {}
    for d in dropped:
        by_pair.setdefault((d.model, d.scorer, d.reason), []).append(d.dims)
    by_reason: dict[tuple, list[str]] = {}
    for (model, scorer, reason), dims in by_pair.items():
        by_reason.setdefault((scorer, tuple(sorted(set(dims))), reason), []).append(model)
    lines = []
    for (scorer, dims, reason), models in by_reason.items():
        what = ", ".join(models) + ("" if scorer is None else f" x {scorer}")
        lines.append(f"{what} ({', '.join(f'{d}D' for d in dims)}): {reason}")
    return lines


@dataclass
class PreparedData:
    """The cache, split and identity of the data every cell uses."""

    cache_dir: Path
    split: Any
    fingerprint: str
    pipeline_hash: str
    modalities: tuple[str, ...]
    healthy_cache_dir: Path | None = None
    healthy_split: Any = None


class BenchRunner:
    """Runs the pending cells of a matrix; see the module docstring for the output folder."""

    def __init__(self, cfg: BenchConfig, registries: Any, *, console: "Console", progress: bool = True,
                 executor: Any = None, registries_factory: Callable[[], Any] | str | None = None,
                 run_id: str | None = None) -> None:
        self.cfg = cfg
        self.registries = registries
        self.console = console
        self.progress = progress
        self.out = Path(cfg.out)
        self.store = ResultsStore(self.out)
        self.run_id = run_id or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
        self.data: PreparedData | None = None
        self.executor = executor  # None: the in-process loop (run_units)
        self.registries_factory = registries_factory

    # -- the run ----------------------------------------------------------------------------------
    def run(self, matrix: Matrix) -> int:
        from rich.markup import escape

        self.out.mkdir(parents=True, exist_ok=True)
        pending = {u.unit_id: [c for c in u.cells if not self.store.is_done(c.cell_id)] for u in matrix.units}
        todo = [u for u in matrix.units if pending[u.unit_id]]
        n_cells, n_todo = len(matrix.cells), sum(len(v) for v in pending.values())
        self.console.print(
            f"bench [bold]{escape(self.cfg.name)}[/]: {n_cells} cells in {len(matrix.units)} training units; "
            f"{n_cells - n_todo} already done, {n_todo} to run -> {escape(str(self.out))}"
        )
        self.data = self.prepare_data()
        self._write_run_files(matrix)
        work = [(u, pending[u.unit_id]) for u in todo]
        if self.executor is None:
            failed, running = self.run_units(work), 0
        else:
            outcome = self.executor.run(self, work)
            failed, running = outcome.failed, outcome.running
        self.store.rebuild()
        done = n_todo - failed - running
        colour = "green" if not failed else "red"
        queued = f", {running} in queued or running jobs" if running else ""
        self.console.print(
            f"[{colour}]{done} cell(s) done, {failed} failed[/]{queued} (plus {n_cells - n_todo} from earlier runs); "
            f"results: {escape(str(self.store.results_path))}"
        )
        return 0 if failed == 0 else 1

    def run_units(self, work: list[tuple[Unit, list[Cell]]]) -> int:
        """The in-process loop: each unit in turn, with a progress bar; returns failed cells."""
        failed = 0
        bar = progress_bar(enabled=self.progress, console=self.console, field="info")
        with bar:
            task = bar.add_task("matrix", total=sum(len(cells) for _, cells in work), info="")
            for unit, cells in work:
                bar.update(task, info=unit.label)
                failed += self.run_unit(unit, cells)
                bar.advance(task, len(cells))
        return failed

    def record_failed_job(self, unit: Unit, cells: list[Cell], message: str) -> None:
        """Failed rows for the cells of ``unit`` that a dead worker or job left unfinished."""
        train = None
        marker = self.unit_dir(unit) / UNIT_MARKER
        if marker.is_file():
            try:
                train = {**json.loads(marker.read_text()), "reused": True}
            except (OSError, ValueError):
                train = None
        for cell in cells:
            if not self.store.is_done(cell.cell_id):
                self.store.write(self.failed_row(cell, message, unit, train))

    def run_unit(self, unit: Unit, cells: list[Cell]) -> int:
        """Train (or reuse) the unit's model, score its pending cells; returns how many failed."""
        from brats_ad.bench.scoring import score_unit

        try:
            train = self.train_unit(unit)
        except Exception as exc:  # a diverged GAN, a bad plugin: record, go on (not KeyboardInterrupt)
            message = one_line(exc)
            self.console.print(f"[red]failed[/] {unit.label}: {message}")
            for cell in cells:
                self.store.write(self.failed_row(cell, message, unit))
            return len(cells)
        try:
            rows = score_unit(self, unit, cells, train)
        except Exception as exc:
            message = one_line(exc)
            self.console.print(f"[red]failed[/] scoring {unit.label}: {message}")
            for cell in cells:
                self.store.write(self.failed_row(cell, message, unit, train))
            return len(cells)
        return sum(1 for r in rows if r["status"] != "done")

    # -- data -------------------------------------------------------------------------------------
    def prepare_data(self) -> PreparedData:
        """Generate / discover the cases, prepare the cache, create or reuse the split."""
        from brats_ad.data.splits import load_or_create_split, strata_from_cache

        cfg = self.cfg
        cases, pipeline, cache_dir = self._prepare(cfg.dataset.name, cfg.dataset.root, cfg.dataset.params,
                                                   cfg.dataset.pipeline, cfg.cache_root, resolved_modalities(cfg, self.registries),
                                                   max_cases=cfg.dataset.max_cases, workers=cfg.dataset.workers)
        ids = [c.case_id for c in cases]
        fingerprint = dataset_fingerprint(cases, resolved_modalities(cfg, self.registries))
        self._check_dataset(fingerprint, pipeline.config_hash())
        split = load_or_create_split(self.out / "split.json", ids, seed=cfg.split.seed, val=cfg.split.val,
                                     test=cfg.split.test, strata=strata_from_cache(cache_dir, ids))
        data = PreparedData(cache_dir=cache_dir, split=split, fingerprint=fingerprint,
                            pipeline_hash=pipeline.config_hash(), modalities=resolved_modalities(cfg, self.registries))
        if cfg.healthy is not None:
            h = cfg.healthy
            h_cases, _, h_cache = self._prepare(h.dataset, h.root, h.params, h.pipeline,
                                                h.cache or (self.out / "cache-healthy"), data.modalities)
            data.healthy_cache_dir = h_cache
            data.healthy_split = load_or_create_split(self.out / "split-healthy.json", [c.case_id for c in h_cases],
                                                      seed=h.seed, val=h.val, test=0)
        return data

    def _prepare(self, dataset: str, root: Path, params: Any, pipeline_spec: Any, cache_root: Path,
                 modalities: tuple[str, ...], *, max_cases: int | None = None,
                 workers: int | None = None) -> tuple[list[Any], Any, Path]:
        from brats_ad.data.prepare import prepare_dataset, resolve_pipeline
        from brats_ad.preprocess.pipeline import build_pipeline

        entry = self.registries.datasets.get(dataset)
        root = Path(root)
        if not root.is_dir() and dataset != "synthetic":
            raise DataError(f"dataset folder {root} does not exist; pass --data DIR or set [dataset] root")
        overrides = dict(params)
        if "modalities" in entry.params:
            overrides["modalities"] = modalities
        if "progress" in entry.params and "progress" not in overrides:
            overrides["progress"] = self.progress
        cases = entry.load()(root, **entry.resolve_params(overrides)).cases()
        if not cases:
            raise DataError(f"no cases found in {root} by dataset {dataset!r}; check --data / [dataset] root")
        if max_cases is not None:
            from brats_ad.data.splits import subset_patients

            keep = set(subset_patients([c.case_id for c in cases], max_cases, self.cfg.split.seed))
            if len(keep) < len(cases):
                self.console.print(f"[yellow]note[/] using {len(keep)} of {len(cases)} cases in {root}: "
                                   f"{max_cases} patients drawn with split seed {self.cfg.split.seed} "
                                   "([dataset] max_cases / --max-cases)")
            cases = [c for c in cases if c.case_id in keep]
        if workers is None:  # processes pay off once there is real work; 14 synthetic cases are not
            workers = min(8, os.cpu_count() or 1) if len(cases) >= 32 else 1
        if isinstance(pipeline_spec, tuple):
            pipeline = build_pipeline([dict(s) for s in pipeline_spec], self.registries)
        else:
            pipeline = resolve_pipeline(pipeline_spec, dataset)
        summary = prepare_dataset(cases, pipeline, cache_root, modalities=modalities, workers=workers,
                                  progress=self.progress, console=self.console)
        return cases, pipeline, summary.cache_dir

    def _check_dataset(self, fingerprint: str, pipeline_hash: str) -> None:
        """An output folder belongs to one dataset: refuse to mix results of two."""
        path = self.out / "dataset.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("fingerprint") != fingerprint:
                raise DataError(
                    f"{self.out} holds results for dataset fingerprint {saved.get('fingerprint')} "
                    f"({saved.get('root')}), this run's data has {fingerprint}; use another --out folder"
                )
        write_json_atomic(path, {"name": self.cfg.dataset.name, "root": str(self.cfg.dataset.root),
                                 "fingerprint": fingerprint, "pipeline_hash": pipeline_hash})

    def _write_run_files(self, matrix: Matrix) -> None:
        if self.cfg.source is not None and Path(self.cfg.source).is_file():
            shutil.copyfile(self.cfg.source, self.out / "config.toml")
        write_json_atomic(self.out / "runs" / f"{self.run_id}.json", {
            "run_id": self.run_id, "config": str(self.cfg.source), "config_hash": self.cfg.config_hash(),
            "created": now(), "cells": [c.cell_id for c in matrix.cells],
            "units": [{"unit_id": u.unit_id, "label": u.label,
                       "cells": [{"cell_id": c.cell_id, "label": c.label} for c in u.cells]} for u in matrix.units],
            "dropped": [str(d) for d in matrix.dropped], "versions": self.versions(),
        })

    # -- training ---------------------------------------------------------------------------------
    def unit_dir(self, unit: Unit) -> Path:
        return self.out / "models" / unit.dirname

    def train_data(self, unit: Unit) -> tuple[Any, Path, Any]:
        """``(DataSection, cache dir, split)`` the unit trains on (BraTS or healthy controls)."""
        data = self.data
        assert data is not None
        if self.cfg.strategy == "healthy-controls":
            section = data_section(self.cfg, unit.dims, data.healthy_cache_dir, unlabelled="healthy")
            return (dataclasses.replace(section, split_file=self.out / "split-healthy.json"),
                    data.healthy_cache_dir, data.healthy_split)
        section = data_section(self.cfg, unit.dims, data.cache_dir)
        return dataclasses.replace(section, split_file=self.out / "split.json"), data.cache_dir, data.split

    def train_unit(self, unit: Unit) -> dict[str, Any]:
        """Train the unit's model once; later runs reuse ``models/<unit>/`` (``unit.json``)."""
        from brats_ad.train.config import ModelSection, TrainConfig
        from brats_ad.train.device import seed_everything, select_device
        from brats_ad.train.loop import fit
        from brats_ad.train.run import healthy_dataset, write_run_config

        folder = self.unit_dir(unit)
        marker = folder / UNIT_MARKER
        if marker.is_file():
            info = json.loads(marker.read_text())
            if (folder / info["checkpoint"]).is_file() and info.get("unit_id") == unit.unit_id:
                info["reused"] = True
                return info
        settings = self.cfg.train_settings(unit.spec, unit.seed)
        section, cache_dir, split = self.train_data(unit)
        train_ds = healthy_dataset(section, cache_dir, split.train)
        val_ds = healthy_dataset(section, cache_dir, split.val) if split.val else None
        entry = self.registries.models.get(unit.model)
        train_cfg = TrainConfig(data=section, model=ModelSection(unit.model, dict(unit.spec.params)),
                                train=settings, output_dir=folder, source=self.cfg.source)
        folder.mkdir(parents=True, exist_ok=True)
        write_run_config(folder / "train_config.json", train_cfg, cache_dir, split, dict(unit.model_params),
                          len(train_ds), len(val_ds) if val_ds is not None else 0)
        seed_everything(settings.seed)
        model = entry.load()(**unit.model_params)
        started = time.perf_counter()
        result = fit(model, train_ds, val_ds, folder, name=entry.name, settings=settings,
                     progress=self.progress, resume=True, console=self.console)
        info = {
            "unit_id": unit.unit_id, "model": unit.model, "dims": unit.dims, "seed": unit.seed,
            "checkpoint": result.checkpoint.name, "status": result.status, "epochs": result.epochs,
            "best_val": result.best_val, "best_epoch": result.best_epoch,
            "train_s": time.perf_counter() - started, "device": str(select_device(settings.device)),
            "train_samples": len(train_ds), "val_samples": len(val_ds) if val_ds is not None else 0,
            "created": now(),
        }
        write_json_atomic(marker, info)
        info["reused"] = False
        return info

    # -- rows -------------------------------------------------------------------------------------
    def base_row(self, cell: Cell, unit: Unit, train: dict[str, Any] | None) -> dict[str, Any]:
        data = self.data
        cfg = self.cfg
        folder = self.unit_dir(unit)
        entry = self.registries.scorers.get(cell.scorer)
        map_kind = getattr(entry.load(), "map_kind", "voxel")
        split = data.split if data else None
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "cell_id": cell.cell_id,
            "status": "done",
            "error": None,
            "model": cell.model,
            "model_params": dict(cell.model_params),
            "scorer": cell.scorer,
            "scorer_params": dict(cell.scorer_params),
            "scorer_map_kind": map_kind if map_kind in ("voxel", "constant") else "voxel",
            "dims": cell.dims,
            "seed": cell.seed,
            "metrics": {k: None for k in METRIC_KEYS},
            "thresholds": {"valbest": None, "healthyq": None, "healthyq_q": cfg.evaluation.healthy_quantile},
            "n_cases": {"train": len(split.train) if split else 0, "val": len(split.val) if split else 0,
                        "test": len(split.test) if split else 0},
            "n_skipped_dice": 0,
            "timings": {"train_s": (train or {}).get("train_s"), "score_s": None, "eval_s": None,
                        "train_reused": bool((train or {}).get("reused"))},
            "artifacts": {
                "checkpoint": self.store.relpath(folder / (train or {}).get("checkpoint", "best.pt")) if train else None,
                "history": self.store.relpath(folder / "history.csv"),
                "curves": None,
                "gallery": None,
            },
            "config_hash": cfg.config_hash(),
            "dataset": {
                "name": cfg.dataset.name, "root": str(cfg.dataset.root),
                "fingerprint": data.fingerprint if data else None,
                "modalities": list(data.modalities) if data else None,
                "pipeline_hash": data.pipeline_hash if data else None,
                "split_hash": split.hash if split else None,
            },
            "protocol": {
                "threshold_protocols": ["valbest", "healthyq"],
                "healthy_quantile": cfg.evaluation.healthy_quantile,
                "postprocess": dict(cell.scorer_params.get("postprocess") or {}),
                "min_component_size": cfg.evaluation.min_component_size,
                "sample_level": "slice" if cell.dims == 2 else "patch",
                "training": cfg.strategy,
                "voxels": "brain voxels of test volumes, processed space",
                "bootstrap": {"n_boot": cfg.evaluation.bootstrap, "level": cfg.evaluation.bootstrap_level,
                              "unit": "test patient"},
            },
            "device": (train or {}).get("device") or "cpu",
            "versions": self.versions(),
            "git_revision": git_revision(),
            "created": now(),
        }

    def failed_row(self, cell: Cell, message: str, unit: Unit, train: dict[str, Any] | None = None) -> dict[str, Any]:
        row = self.base_row(cell, unit, train)
        row.update(status="failed", error=message)
        return row

    _versions: dict[str, Any] | None = None

    def versions(self) -> dict[str, Any]:
        if self._versions is None:
            import monai
            import torch

            plugins: dict[str, str | None] = {}
            for entry in self.registries.entries():
                dist = entry.source.distribution
                if dist != "brats-ad":
                    plugins[dist] = entry.source.version
            self._versions = {"brats_ad": __version__, "torch": str(torch.__version__), "monai": monai.__version__,
                              "python": sys.version.split()[0], "plugins": plugins}
        return self._versions


# -- helpers ---------------------------------------------------------------------------------------
def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


_GIT: list[str | None] = []


def git_revision() -> str | None:
    """``git rev-parse HEAD`` of the brats_ad source tree when it is a checkout, else None."""
    if not _GIT:
        root = Path(__file__).resolve().parents[2]
        rev = None
        if (root / ".git").exists():
            try:
                done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                      text=True, timeout=10, check=False)
                rev = done.stdout.strip() or None if done.returncode == 0 else None
            except (OSError, subprocess.SubprocessError):
                rev = None
        _GIT.append(rev)
    return _GIT[0]


def dataset_fingerprint(cases: list[Any], modalities: tuple[str, ...]) -> str:
    """Hash of case ids and the names and sizes of their files (not mtimes: a copy keeps it)."""
    items = []
    for case in sorted(cases, key=lambda c: c.case_id):
        files = {m: [Path(case.images[m]).name, _size(case.images[m])] for m in modalities if m in case.images}
        seg = None if case.seg is None else [Path(case.seg).name, _size(case.seg)]
        items.append([case.case_id, files, seg])
    return stable_hash(items)


def _size(path: Any) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


__all__ = ["BenchRunner", "run_bench", "dataset_fingerprint", "git_revision"]
