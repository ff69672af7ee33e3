"""The ``slurm`` executor: one submitit job per training unit; ``bench`` returns with the job ids.

Submission is a SLURM job array (``array_parallelism`` at once). Each job runs
:func:`~brats_ad.bench.executors.run_unit_job`: it trains (or reuses) its unit's model and
writes one row per cell into ``cells/``. Job ids go to ``jobs.json``. Rerunning ``bench``
*collects*: units whose cells are all done are finished; a job still queued or running is left
alone; a unit whose job ended with cells missing gets failed rows naming the job's state and
error, and is submitted again together with every unit not submitted yet. Jobs that reach their
time limit (or are preempted) are requeued by submitit and resume training from ``last.pt``.

``cluster = "local"`` runs the same jobs as local subprocesses (submitit's local executor): no
SLURM needed, for tests and for trying a config before a cluster run.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from brats_ad.bench.executors import Outcome, UnitJob, registries_spec
from brats_ad.bench.executors.jobs import is_active, job_state, load_jobs, remember, save_jobs
from brats_ad.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from brats_ad.bench.matrix import Cell, Unit
    from brats_ad.bench.runner import BenchRunner

CLUSTERS = ("slurm", "local")


class SlurmExecutor:
    """Submit units as SLURM jobs through submitit; parameters as in ``[executor]``."""

    name = "slurm"

    def __init__(
        self,
        partition: str | None = None,
        gpus_per_node: int = 1,
        cpus_per_task: int = 8,
        timeout_min: int = 240,
        mem_gb: float = 32,
        array_parallelism: int = 32,
        job_name: str = "brats-ad",
        additional: Mapping[str, Any] | None = None,
        setup: Sequence[str] = (),
        cluster: str = "slurm",
        folder: str = "jobs",
        wait: bool = False,
        poll_s: float = 30.0,
    ) -> None:
        for key, value, low in (("gpus_per_node", gpus_per_node, 0), ("cpus_per_task", cpus_per_task, 1),
                                ("timeout_min", timeout_min, 1), ("array_parallelism", array_parallelism, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"executor slurm: {key} must be an integer >= {low}, got {value!r}")
        if isinstance(mem_gb, bool) or not isinstance(mem_gb, (int, float)) or mem_gb <= 0:
            raise ConfigError(f"executor slurm: mem_gb must be a number > 0, got {mem_gb!r}")
        if cluster not in CLUSTERS:
            raise ConfigError(f"executor slurm: cluster must be one of {', '.join(CLUSTERS)}, got {cluster!r}")
        if partition is not None and not isinstance(partition, str):
            raise ConfigError(f"executor slurm: partition must be a string, got {partition!r}")
        if not isinstance(additional or {}, Mapping):
            raise ConfigError(f"executor slurm: additional must be a table of sbatch options, got {additional!r}")
        if isinstance(setup, str) or not all(isinstance(s, str) for s in setup):
            raise ConfigError(f"executor slurm: setup must be a list of shell lines, got {setup!r}")
        if not isinstance(poll_s, (int, float)) or poll_s <= 0:
            raise ConfigError(f"executor slurm: poll_s must be a number > 0, got {poll_s!r}")
        self.partition = partition
        self.gpus_per_node = gpus_per_node
        self.cpus_per_task = cpus_per_task
        self.timeout_min = timeout_min
        self.mem_gb = mem_gb
        self.array_parallelism = array_parallelism
        self.job_name = job_name
        self.additional = dict(additional or {})
        self.setup = list(setup)
        self.cluster = cluster
        self.folder = folder
        self.wait = bool(wait)
        self.poll_s = float(poll_s)

    # -- the run ----------------------------------------------------------------------------------
    def run(self, runner: "BenchRunner", work: list[tuple["Unit", list["Cell"]]]) -> Outcome:
        out = runner.out
        records = load_jobs(out)
        busy, resubmit = self.collect(runner, records, work)
        to_submit = [(u, c) for u, c in work if u.unit_id not in busy]
        ids: list[str] = []
        if to_submit:
            ids = self.submit(runner, records, to_submit)
        save_jobs(out, records)
        if busy:
            runner.console.print(f"{len(busy)} unit(s) still queued or running, left alone: "
                                 + ", ".join(f"{records[u]['job_id']} ({records[u]['label']})" for u in busy))
        if ids:
            again = f" ({resubmit} resubmitted)" if resubmit else ""
            runner.console.print(f"submitted {len(ids)} job(s){again}: {' '.join(ids)}")
        waiting = [u for u, _ in work]
        if self.wait and waiting:
            wait_for_jobs(out, [u.unit_id for u in waiting], poll_s=self.poll_s, console=runner.console)
            records = load_jobs(out)
            self.collect(runner, records, work)
            save_jobs(out, records)
        failed = running = 0
        for unit, cells in work:
            active = is_active(records.get(unit.unit_id, {}).get("state"))
            for cell in cells:
                status = runner.store.status(cell.cell_id)
                if status == "done":
                    continue
                if active:
                    running += 1
                elif status == "failed":
                    failed += 1
        if running:
            runner.console.print(f"follow with 'brats-ad status {out}'; rerun the same 'brats-ad bench' command "
                                 "to collect finished jobs and resubmit failed ones")
        return Outcome(failed=failed, running=running, jobs=tuple(ids))

    def collect(self, runner: "BenchRunner", records: dict[str, dict[str, Any]],
                work: list[tuple["Unit", list["Cell"]]]) -> tuple[set[str], int]:
        """Refresh every record's state; failed rows for cells a finished job left without one.

        Returns the units whose job is still active, and how many ended units will be resubmitted.
        """
        pending = {u.unit_id: (u, cells) for u, cells in work}
        busy: set[str] = set()
        resubmit = 0
        for unit_id, record in records.items():
            if record.get("state") in ("COMPLETED",) and unit_id not in pending:
                continue  # collected earlier and nothing left to do
            state, error = job_state(runner.out, record)
            record["state"], record["error"] = state, error
            if unit_id not in pending:
                continue
            if is_active(state):
                busy.add(unit_id)
                continue
            unit, cells = pending[unit_id]
            if state == "UNKNOWN":
                runner.console.print(f"[yellow]note[/]: the scheduler does not know job {record['job_id']} "
                                     f"({unit.label}); treating it as ended and resubmitting")
            # cells this job left without a row of its own run: the job died before writing them
            missing = [c for c in cells if (runner.store.read(c.cell_id) or {}).get("run_id") != record.get("run_id")]
            if missing:
                reason = error or "job {} ended {} without writing these cells".format(record["job_id"], state)
                runner.record_failed_job(unit, missing, f"JobFailed: {reason}")
            resubmit += 1
        return busy, resubmit

    def submit(self, runner: "BenchRunner", records: dict[str, dict[str, Any]],
               work: list[tuple["Unit", list["Cell"]]]) -> list[str]:
        """One array of jobs, one job per unit; records updated in place. Returns the job ids."""
        executor = self.make_submitit(runner.out)
        spec = registries_spec(runner.registries_factory)
        cwd = os.getcwd()
        payloads = [UnitJob(runner.cfg, unit.unit_id, runner.run_id, cwd, spec, unit.label) for unit, _ in work]
        with executor.batch():  # one job array on SLURM
            jobs = [executor.submit(p) for p in payloads]
        now = _now()
        ids = []
        for (unit, _cells), job in zip(work, jobs):
            remember(job)
            old = records.get(unit.unit_id)
            previous = list(old.get("previous", [])) + [old["job_id"]] if old else []
            records[unit.unit_id] = {
                "label": unit.label, "cells": [c.cell_id for c in unit.cells], "job_id": str(job.job_id),
                "cluster": self.cluster, "folder": os.path.relpath(job.paths.folder, runner.out),
                "submitted": now, "run_id": runner.run_id, "state": "PENDING", "error": None,
                "previous": previous,
            }
            ids.append(str(job.job_id))
        return ids

    def check(self) -> None:
        """Fail before any work when jobs cannot be submitted from here."""
        import importlib.util

        if importlib.util.find_spec("submitit") is None:
            raise ConfigError("executor slurm needs submitit; install it with: pip install 'brats-ad[slurm]'")
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError(
                "executor slurm: 'sbatch' is not on PATH, so this is not a SLURM login node; run bench there, "
                'or try the jobs locally with [executor] cluster = "local"'
            )

    def make_submitit(self, out: Path) -> Any:
        """A configured ``submitit.AutoExecutor`` writing logs under ``<out>/<folder>/<job id>/``."""
        self.check()
        import submitit

        executor = submitit.AutoExecutor(folder=Path(out) / self.folder / "%j", cluster=self.cluster)
        params: dict[str, Any] = {
            "name": self.job_name, "timeout_min": self.timeout_min, "mem_gb": self.mem_gb,
            "cpus_per_task": self.cpus_per_task, "gpus_per_node": self.gpus_per_node, "tasks_per_node": 1,
            "nodes": 1, "slurm_array_parallelism": self.array_parallelism,
        }
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.additional:
            params["slurm_additional_parameters"] = dict(self.additional)
        if self.setup:
            params["slurm_setup"] = list(self.setup)
        executor.update_parameters(**params)
        return executor


def wait_for_jobs(out: Path, unit_ids: Sequence[str] | None = None, *, poll_s: float = 30.0,
                  timeout_s: float | None = None, console: Any = None) -> dict[str, str]:
    """Block until the recorded jobs of ``unit_ids`` (default: all) have ended; their states."""
    started = time.monotonic()
    while True:
        records = load_jobs(out)
        wanted = [u for u in (unit_ids if unit_ids is not None else records) if u in records]
        states = {u: job_state(out, records[u])[0] for u in wanted}
        active = [u for u, s in states.items() if is_active(s)]
        if not active:
            return states
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{len(active)} job(s) still active after {timeout_s:.0f} s")
        time.sleep(poll_s)


def _now() -> str:
    from brats_ad.bench.runner import now

    return now()


__all__ = ["SlurmExecutor", "wait_for_jobs"]
