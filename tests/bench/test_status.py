"""``bench_status``: done / running / failed / pending cells from cells/, runs/ and jobs.json."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from brats_ad.bench.executors.jobs import save_jobs
from brats_ad.bench.results import ROW_KEYS, ResultsStore
from brats_ad.io import write_json_atomic
from brats_ad.bench.status import bench_status, print_status, status_from_cli
from brats_ad.errors import DataError


def _dead_pid() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return str(proc.pid)


def _row(cell_id: str, status: str, error: str | None = None, run_id: str = "r1") -> dict:
    return {**dict.fromkeys(ROW_KEYS), "cell_id": cell_id, "status": status, "error": error, "run_id": run_id,
            "model": "ae", "scorer": "residual", "dims": 2, "seed": 0, "created": "2024-01-01T00:00:00"}


def _job(unit: str, job_id: str, state: str = "PENDING") -> dict:
    return {"label": unit, "cells": [], "job_id": job_id, "cluster": "local", "folder": f"jobs/{job_id}",
            "submitted": "2024-01-01T00:00:00", "run_id": "r1", "state": state, "error": None, "previous": []}


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    """Five units: done (in-process), running job, job died, no job yet, failed cell being retried."""
    units = [("u-done", ["c1"]), ("u-run", ["c2", "c3"]), ("u-dead", ["c4"]), ("u-new", ["c5"]), ("u-retry", ["c6"])]
    write_json_atomic(tmp_path / "runs" / "r1.json", {
        "run_id": "r1", "created": "2024-01-01T00:00:00",
        "units": [{"unit_id": u, "label": f"{u} 2D seed 0", "cells": [{"cell_id": c, "label": f"{u} x {c}"} for c in cs]}
                  for u, cs in units]})
    write_json_atomic(tmp_path / "runs" / "r0.json", {"run_id": "r0", "created": "2023-01-01T00:00:00", "units": []})
    store = ResultsStore(tmp_path)
    store.write(_row("c1", "done"))
    store.write(_row("c2", "done"))
    store.write(_row("c6", "failed", "TrainingDiverged: loss is nan", run_id="r0"))
    store.write(_row("c9", "done"))  # a cell no longer in the matrix
    dead = _dead_pid()
    (tmp_path / "jobs" / dead).mkdir(parents=True)
    save_jobs(tmp_path, {"u-run": _job("u-run", str(os.getpid())), "u-dead": _job("u-dead", dead, "RUNNING"),
                         "u-retry": _job("u-retry", str(os.getpid()))})
    return tmp_path


def test_counts_and_reasons(bench_dir):
    st = bench_status(bench_dir)
    assert st.run_id == "r1"
    assert st.counts == {"done": 3, "running": 2, "failed": 1, "pending": 1} and not st.finished
    by = {c.cell_id: c for c in st.cells}
    assert [by[c].status for c in ("c1", "c2", "c3", "c4", "c5", "c6", "c9")] == \
        ["done", "done", "running", "failed", "pending", "running", "done"]
    assert by["c4"].error.startswith("job ") and "ended without a result" in by["c4"].error
    assert by["c3"].label == "u-run x c3" and by["c9"].label == "ae 2D seed 0 x residual"
    units = {u.unit_id: u for u in st.units}
    assert units["u-run"].job_state == "RUNNING" and units["u-run"].counts["running"] == 1
    assert units["u-dead"].job_state == "FAILED" and units["u-new"].job_id is None


def test_refresh_false_trusts_jobs_json(bench_dir):
    st = bench_status(bench_dir, refresh=False)
    assert {u.unit_id: u.job_state for u in st.units if u.job_id} == \
        {"u-run": "PENDING", "u-dead": "RUNNING", "u-retry": "PENDING"}
    assert st.counts["running"] == 3  # u-dead's recorded state is still RUNNING


def test_json_and_table(bench_dir, capsys):
    assert status_from_cli(bench_dir, as_json=True) == 1  # a failed cell
    payload = json.loads(capsys.readouterr().out)
    assert payload["counts"]["failed"] == 1 and payload["finished"] is False and len(payload["cells"]) == 7
    buf = io.StringIO()
    print_status(bench_status(bench_dir), Console(file=buf, width=200))
    text = buf.getvalue()
    assert "3 done, 2 running, 1 failed, 1 pending" in text
    assert "failed u-dead x c4 (c4): job" in text and "rerun the same 'brats-ad bench'" in text
    assert "u-run 2D seed 0" in text and str(os.getpid()) in text


def test_all_done_is_finished(tmp_path):
    write_json_atomic(tmp_path / "runs" / "r.json", {"run_id": "r", "created": "x", "units": [
        {"unit_id": "u", "label": "u", "cells": [{"cell_id": "a", "label": "a"}]}]})
    ResultsStore(tmp_path).write(_row("a", "done"))
    st = bench_status(tmp_path)
    assert st.finished and st.counts["done"] == 1
    assert status_from_cli(tmp_path, console=Console(file=io.StringIO())) == 0


def test_missing_or_empty_folder_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="does not exist; pass the --out folder"):
        bench_status(tmp_path / "nope")
    with pytest.raises(DataError, match="holds no bench run"):
        bench_status(tmp_path)
