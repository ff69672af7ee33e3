"""The ``local`` executor: units one after another in this process, or one worker process per GPU.

``workers = 1`` (default) is the plain loop. ``workers = "per-gpu"`` starts one worker process
per visible GPU (``CUDA_VISIBLE_DEVICES`` pinned per worker, so each sees one device as
``cuda:0``); each worker takes the next unit when it finishes one. ``workers = N`` starts N
worker processes without pinning (CPU machines). With no GPU visible, ``per-gpu`` falls back
to the in-process loop and says so. Workers are *spawned* (never forked: a forked CUDA or
OpenMP runtime deadlocks) and write their rows straight into the store.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from brats_ad.bench.executors import Outcome, UnitJob, registries_spec
from brats_ad.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from brats_ad.bench.matrix import Cell, Unit
    from brats_ad.bench.runner import BenchRunner


class LocalExecutor:
    """Run units on this machine; see the module docstring for ``workers``."""

    name = "local"

    def __init__(self, workers: int | str = 1) -> None:
        ok = workers == "per-gpu" or (isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1)
        if not ok:
            raise ConfigError(f'executor local: workers must be an integer >= 1 or "per-gpu", got {workers!r}')
        self.workers = workers

    def run(self, runner: "BenchRunner", work: list[tuple["Unit", list["Cell"]]]) -> Outcome:
        slots: list[str | None]
        if self.workers == "per-gpu":
            gpus = visible_gpus()
            if not gpus:
                runner.console.print('[yellow]note[/]: workers = "per-gpu" but no GPU is visible; '
                                     "running the units one after another in this process")
                return Outcome(failed=runner.run_units(work))
            slots = list(gpus)
        else:
            slots = [None] * int(self.workers)
        if not work or slots == [None]:
            return Outcome(failed=runner.run_units(work))
        return Outcome(failed=_run_in_workers(runner, work, slots))


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else every CUDA device."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken CUDA setup means no GPU, not a crash
        return []


def _pin(gpu: str | None) -> None:
    """Worker initializer: runs before the worker imports torch, so CUDA sees one device."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def _run_in_workers(runner: "BenchRunner", work: list[tuple["Unit", list["Cell"]]], slots: list[str | None]) -> int:
    """One single-process pool per slot; a free slot takes the next unit. Returns failed cells."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from brats_ad.bench.runner import one_line
    from brats_ad.progress import progress_bar

    ctx = multiprocessing.get_context("spawn")
    spec = registries_spec(runner.registries_factory)
    where = ", ".join("CPU" if s is None else f"GPU {s}" for s in slots)
    runner.console.print(f"{len(slots)} worker process(es): {where}")
    pools = [ProcessPoolExecutor(1, mp_context=ctx, initializer=_pin, initargs=(s,)) for s in slots]
    queue = list(work)
    free = list(range(len(pools)))
    running: dict[Any, tuple[int, Any, list[Any]]] = {}
    failed = 0
    bar = progress_bar(enabled=runner.progress, console=runner.console, field="info")
    try:
        with bar:
            task = bar.add_task("matrix", total=sum(len(c) for _, c in work), info="")
            while queue or running:
                while queue and free:
                    slot = free.pop(0)
                    unit, cells = queue.pop(0)
                    job = UnitJob(runner.cfg, unit.unit_id, runner.run_id, os.getcwd(), spec, unit.label)
                    running[pools[slot].submit(job)] = (slot, unit, cells)
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    slot, unit, cells = running.pop(fut)
                    free.append(slot)
                    try:
                        fut.result()
                    except Exception as exc:  # the worker died or the job raised: record, go on
                        runner.console.print(f"[red]failed[/] {unit.label}: {one_line(exc)}")
                        runner.record_failed_job(unit, cells, one_line(exc))
                        if "BrokenProcessPool" in type(exc).__name__:
                            pools[slot] = ProcessPoolExecutor(1, mp_context=ctx, initializer=_pin,
                                                              initargs=(slots[slot],))
                    failed += sum(1 for c in cells if runner.store.status(c.cell_id) != "done")
                    bar.update(task, info=unit.label)
                    bar.advance(task, len(cells))
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
    return failed


__all__ = ["LocalExecutor", "visible_gpus"]
