"""Executors: where the training units of a bench matrix run (in this process, worker processes, SLURM).

A *job* is one training unit, not one cell: the cells of a unit share one trained model, and
splitting them over jobs would train that model once per job (or make jobs wait for each
other). A unit's job trains (or reuses) the checkpoint and then scores every pending cell of
the unit; each cell's row reaches the results store on its own (``cells/<cell_id>.json``,
atomic), so rows from many jobs at once are safe (see :mod:`brats_ad.bench.results`).

An executor is a registered component (``brats_ad_register_executors``): its factory takes
the ``[executor]`` parameters and returns an object with::

    run(runner: BenchRunner, work: list[tuple[Unit, list[Cell]]]) -> Outcome

``work`` holds every unit with pending cells (data prepared, split written). An in-process
executor calls ``runner.run_units(work)``; an out-of-process one ships :class:`UnitJob`
payloads and calls :func:`run_unit_job` in the worker. Built-ins: ``local`` and ``slurm``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from brats_ad.errors import BratsAdError, ConfigError, UnknownComponent

if TYPE_CHECKING:  # pragma: no cover
    from brats_ad.bench.config import BenchConfig
    from brats_ad.bench.matrix import Cell, Unit
    from brats_ad.bench.runner import BenchRunner

@dataclass(frozen=True)
class Outcome:
    """What an executor's ``run`` left behind, for the runner's summary line.

    ``failed``: cells of ``work`` that failed (rows written); ``running``: cells whose jobs
    are still queued or running (no final row yet); ``jobs``: ids of the jobs submitted now.
    """

    failed: int = 0
    running: int = 0
    jobs: tuple[str, ...] = field(default=())


class Executor(Protocol):
    name: str

    def run(self, runner: "BenchRunner", work: list[tuple["Unit", list["Cell"]]]) -> Outcome: ...


class BenchJobError(BratsAdError):
    """A job could not run its unit (unknown unit, unit already running elsewhere)."""


# -- building an executor ----------------------------------------------------------------------------
def make_executor(name: str, params: Mapping[str, Any], registries: Any) -> Executor:
    """The executor ``name`` built with ``params`` (checked against its registered defaults).

    ``local`` needs no plugin: when the registries lack it (a manager without the built-in
    executor plugin, as in some tests) the in-process default is used directly.
    """
    registry = getattr(registries, "executors", None)
    if registry is not None and name in registry:
        factory = registry.get(name).create
    elif name == "local":
        from brats_ad.bench.executors.local import LocalExecutor

        factory = LocalExecutor
    elif registry is not None:
        registry.get(name)  # raises UnknownComponent with did-you-mean and the known names
        raise AssertionError("unreachable")  # pragma: no cover
    else:  # pragma: no cover - registries without an executors kind
        raise UnknownComponent(f"no executor {name!r}; Known: local. Missing plugin? Run 'brats-ad plugins'.")
    try:
        return factory(**params)
    except BratsAdError as exc:
        raise ConfigError(f"[executor] {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"[executor] {name!r}: invalid parameters ({exc}); fix [executor] in the config or the command-line flags"
        ) from None


# -- the payload a worker process or cluster job runs ----------------------------------------------
@dataclass(frozen=True)
class UnitJob:
    """Everything a fresh process needs to run one unit: the parsed config, the unit, the run id.

    ``registries`` names a zero-argument function (``"module:attr"``) that builds the
    registries in the worker; None uses the installed plugins (``get_registries``). ``cwd`` is
    the submitting process's folder, so relative paths in the config mean the same there.
    Calling the object runs the unit; ``checkpoint`` lets submitit requeue a job that hits its
    time limit or is preempted: the rerun resumes training from ``last.pt``.
    """

    cfg: "BenchConfig"
    unit_id: str
    run_id: str
    cwd: str
    registries: str | None = None
    label: str = ""

    def __call__(self) -> dict[str, Any]:
        return run_unit_job(self)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def registries_spec(factory: Callable[[], Any] | str | None) -> str | None:
    """``"module:attr"`` for a registries factory (a function or the string itself)."""
    if factory is None or isinstance(factory, str):
        return factory
    module, name = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
    if not module or "<" in name or module == "__main__":
        raise ConfigError(f"registries_factory {factory!r} must be a module-level function importable by a worker")
    return f"{module}:{name}"


def load_registries_from(spec: str | None) -> Any:
    if spec is None:
        from brats_ad.plugins import get_registries

        return get_registries()
    import importlib

    module, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj()


def run_unit_job(job: UnitJob) -> dict[str, Any]:
    """Run one unit in this (fresh) process: its pending cells, rows into the store.

    Data preparation and the split were done by the submitting process; here they are only
    read back (``prepare_data`` finds every case cached). Returns ``{"unit_id", "cells",
    "failed", "skipped"}``; a unit whose cells are all done already is a no-op.
    """
    from rich.console import Console

    from brats_ad.bench.matrix import expand
    from brats_ad.bench.runner import BenchRunner

    os.chdir(job.cwd)
    _limit_threads()
    registries = load_registries_from(job.registries)
    console = Console(highlight=False, soft_wrap=True)
    runner = BenchRunner(job.cfg, registries, console=console, progress=False, run_id=job.run_id)
    unit = next((u for u in expand(job.cfg, registries).units if u.unit_id == job.unit_id), None)
    if unit is None:
        raise BenchJobError(
            f"unit {job.unit_id} ({job.label}) is not in the matrix of {job.cfg.source}; the config changed "
            f"after submission: rerun 'brats-ad bench' to resubmit"
        )
    cells = [c for c in unit.cells if not runner.store.is_done(c.cell_id)]
    if not cells:
        return {"unit_id": unit.unit_id, "cells": 0, "failed": 0, "skipped": len(unit.cells)}
    with unit_lock(runner.unit_dir(unit)):
        runner.data = runner.prepare_data()
        console.print(f"unit {unit.label}: {len(cells)} cell(s)")
        failed = runner.run_unit(unit, cells)
    runner.store.rebuild()
    return {"unit_id": unit.unit_id, "cells": len(cells), "failed": failed, "skipped": len(unit.cells) - len(cells)}


def _limit_threads() -> None:
    """Use the CPUs this job was given (a SLURM cgroup, a taskset), not every core of the node."""
    if os.environ.get("OMP_NUM_THREADS"):
        return
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS
        return
    import torch

    torch.set_num_threads(max(1, n))


class unit_lock:
    """An exclusive, non-blocking lock on a unit's folder: two jobs never train one unit at once.

    (A job resubmitted while an old one still runs, e.g. after ``sacct`` lost track of it.)
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / ".job.lock"
        self._fh: Any = None

    def __enter__(self) -> "unit_lock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock
            return self
        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            self._fh = None
            raise BenchJobError(
                f"{self.path.parent.name} is being trained by another job (lock {self.path}); "
                f"wait for it or cancel it ('brats-ad status' shows its job id)"
            ) from None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fh is not None:
            import fcntl

            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()


__all__ = ["BenchJobError", "Executor", "Outcome", "UnitJob", "make_executor", "run_unit_job"]
