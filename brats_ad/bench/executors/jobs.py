"""``jobs.json``: which cluster job runs (or ran) each training unit, and asking a job's state.

One record per unit, written only by the submitting ``brats-ad bench`` (atomically)::

    {"version": 1, "units": {"<unit_id>": {
        "label": "ae 2D seed 0", "cells": ["<cell_id>", ...], "job_id": "4242_3",
        "cluster": "slurm" | "local", "folder": "jobs/4242_3", "submitted": ISO, "run_id": str,
        "state": "PENDING", "error": null, "previous": ["4200_1", ...]}}}

States are SLURM's (``sacct``) plus ``FAILED`` / ``COMPLETED`` read from submitit's result
file, which outranks the scheduler: a job whose result file exists has ended.
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path
from typing import Any

from brats_ad.bench.results import file_lock
from brats_ad.io import write_json_atomic

JOBS = "jobs.json"
VERSION = 1
#: Scheduler states of a job that may still write rows: its unit is not resubmitted.
ACTIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING",
                    "SUSPENDED", "PREEMPTED", "READY", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING",
                    "STAGE_OUT"})

#: Jobs submitted by this process (submitit objects): their state comes from the live handle.
_LIVE: dict[str, Any] = {}
atexit.register(_LIVE.clear)  # drop handles before interpreter teardown (their __del__ needs modules)


def load_jobs(out: Path) -> dict[str, dict[str, Any]]:
    """The unit records of ``<out>/jobs.json`` (empty when there is none or it is unreadable)."""
    try:
        raw = json.loads((Path(out) / JOBS).read_text())
    except (OSError, ValueError):
        return {}
    units = raw.get("units") if isinstance(raw, dict) else None
    return dict(units) if isinstance(units, dict) else {}


def save_jobs(out: Path, records: dict[str, dict[str, Any]]) -> None:
    with file_lock(Path(out) / (JOBS + ".lock")):
        write_json_atomic(Path(out) / JOBS, {"version": VERSION, "units": records})


def is_active(state: str | None) -> bool:
    return (state or "").split()[0].upper() in ACTIVE if state else False


def remember(job: Any) -> None:
    """Keep a submitted job's handle so this process can poll it (local jobs need it)."""
    _LIVE[str(job.job_id)] = job


def job_state(out: Path, record: dict[str, Any]) -> tuple[str, str | None]:
    """``(state, error)`` of a recorded job, asking the result file first, then the scheduler.

    ``error`` is the last line of the job's traceback (or why it ended) for failed jobs.
    """
    from submitit.core.utils import JobPaths

    job_id = str(record["job_id"])
    folder = Path(out) / record["folder"]
    paths = JobPaths(folder, job_id, 0)
    ended = _read_result(paths.result_pickle)
    if ended is not None:
        return ended
    cluster = record.get("cluster", "slurm")
    if cluster == "local":
        state = _local_state(job_id)
    else:
        state = _slurm_state(folder, job_id)
    if is_active(state):
        return state, None
    ended = _read_result(paths.result_pickle)  # it may have finished while we asked
    if ended is not None:
        return ended
    if state in ("UNKNOWN", "") and cluster != "local":
        return "UNKNOWN", None
    reason = _log_tail(paths.stderr) or "no result file"
    if state in ("COMPLETED", "FINISHED"):  # ended, yet submitit wrote no result: killed
        return "FAILED", f"job {job_id} ended without a result ({reason})"
    return state, f"job {job_id} ended {state}: {reason}"


def _read_result(path: Path) -> tuple[str, str | None] | None:
    if not path.exists():
        return None
    from submitit.core.utils import pickle_load

    try:
        kind, value = pickle_load(path)
    except Exception:  # noqa: BLE001 - half-written (slow file system): not ended yet
        return None
    if kind == "success":
        return "COMPLETED", None
    lines = [ln.strip() for ln in str(value).strip().splitlines() if ln.strip()]
    return "FAILED", (lines[-1] if lines else "the job raised")


def _local_state(job_id: str) -> str:
    job = _LIVE.get(job_id)
    if job is not None:
        if not job.done():
            return "RUNNING"
        _LIVE.pop(job_id, None)
        return "FINISHED"
    try:  # a local job started by another process: its id is its pid
        os.kill(int(job_id), 0)
    except (ProcessLookupError, ValueError):
        return "FINISHED"
    except PermissionError:
        return "RUNNING"
    try:
        stat = Path(f"/proc/{int(job_id)}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return "FINISHED"
    except OSError:
        pass
    return "RUNNING"


def _slurm_state(folder: Path, job_id: str) -> str:
    import submitit

    job = _LIVE.get(job_id) or submitit.SlurmJob(folder=folder, job_id=job_id)
    try:
        state = str(job.watcher.get_state(job_id, mode="force"))
    except Exception:  # noqa: BLE001 - sacct missing or failing: we do not know
        return "UNKNOWN"
    state = state.split()[0].upper() if state else "UNKNOWN"  # "CANCELLED by 123" -> CANCELLED
    return state


def _log_tail(path: Path) -> str | None:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1][:300] if lines else None


__all__ = ["ACTIVE", "JOBS", "is_active", "job_state", "load_jobs", "remember", "save_jobs"]
