"""Executors: ``local`` (in-process, worker fallback) and ``slurm`` through submitit's local
executor (real subprocesses): same results table as ``local``, submit-and-return, collect, resubmit."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from rich.console import Console

from brats_ad.bench.config import ExecutorSection, parse_bench_config
from brats_ad.bench.executors import Outcome, make_executor, registries_spec
from brats_ad.bench.executors.jobs import is_active, job_state, load_jobs, save_jobs
from brats_ad.bench.executors.local import LocalExecutor, visible_gpus
from brats_ad.bench.executors.slurm import SlurmExecutor, wait_for_jobs
from brats_ad.errors import ConfigError, UnknownComponent

CONFIGS = Path(__file__).resolve().parent / "configs"  # reduced test configs


HERE = Path(__file__).resolve().parent
JOB_REGISTRIES = "_bench_plugins:bench_registries"  # rebuilt inside each job (tests/bench on PYTHONPATH)


# -- helpers ---------------------------------------------------------------------------------------
def executor_registries():
    """The bench test registries plus the built-in executors (registered directly if the
    plugin manager does not list them yet)."""
    from _bench_plugins import bench_registries

    from brats_ad.bench.executors.plugin import brats_ad_register_executors

    regs = bench_registries()
    if "slurm" not in regs.executors:
        brats_ad_register_executors(regs.executors)
    return regs


def write_config(tmp_path: Path, tiny_data: Path, out: str, edit=None) -> Path:
    raw = (CONFIGS / "tiny.toml").read_text()
    raw = raw.replace('root = "data/tiny"', f'root = "{tiny_data}"\ncache = "{tiny_data.parent / "tiny-cache"}"')
    raw = raw.replace('out = "runs/bench/tiny"', f'out = "{tmp_path / out}"')
    if edit is not None:
        raw = edit(raw)
    path = tmp_path / f"{out}.toml"
    path.write_text(raw)
    return path


def bench(path: Path, registries, **kw) -> tuple[int, str]:
    from brats_ad.bench.runner import run_bench

    buf = io.StringIO()
    rc = run_bench(path, progress=False, console=Console(file=buf, width=250), registries=registries, **kw)
    return rc, buf.getvalue()


def rows(out: Path) -> dict[str, dict]:
    return {r["cell_id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


@pytest.fixture
def job_env(monkeypatch):
    """Jobs import the test plugins and use one thread (as this process does: same numbers)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("BRATS_AD_DISABLE_PLUGIN_AUTOLOAD", "1")


SUBMITIT_LOCAL = {"cluster": "local", "gpus_per_node": 0, "cpus_per_task": 1, "timeout_min": 10, "poll_s": 0.5}


class StubRunner:
    """What an executor needs from a BenchRunner, recording the in-process calls."""

    def __init__(self, tmp_path: Path) -> None:
        self.buf = io.StringIO()
        self.console = Console(file=self.buf, width=200)
        self.calls: list = []
        self.out = tmp_path

    def run_units(self, work):
        self.calls.append(work)
        return 0


# -- slurm through submitit's local executor (real subprocesses) -------------------------------------
@pytest.mark.slow
def test_submitit_jobs_give_the_local_results_table(tmp_path, tiny_data, job_env):
    regs = executor_registries()
    rc, _ = bench(write_config(tmp_path, tiny_data, "local"), regs)
    assert rc == 0
    expected = rows(tmp_path / "local")

    path = write_config(tmp_path, tiny_data, "slurm")
    rc, text = bench(path, regs, executor="slurm", executor_params=SUBMITIT_LOCAL, registries_factory=JOB_REGISTRIES)
    out = tmp_path / "slurm"
    records = load_jobs(out)
    # bench returned at submission: a job needs seconds just to import torch and monai
    assert any(is_active(job_state(out, r)[0]) for r in records.values())
    assert rc == 0 and "submitted 2 job(s)" in text
    assert sorted(r["label"] for r in records.values()) == ["ae 2D seed 0", "flair-threshold 2D seed 0"]
    ids = {r["job_id"] for r in records.values()}
    assert all(i in text for i in ids)

    from brats_ad.bench.status import bench_status

    first = bench_status(out)
    assert first.counts["running"] + first.counts["done"] == 2 and first.counts["failed"] == 0
    assert {u.job_id for u in first.units} == ids

    states = wait_for_jobs(out, poll_s=0.5, timeout_s=240)
    assert set(states.values()) == {"COMPLETED"}
    final = bench_status(out)
    assert final.counts == {"done": 2, "running": 0, "failed": 0, "pending": 0} and final.finished

    rc, text = bench(path, regs, executor="slurm", executor_params=SUBMITIT_LOCAL, registries_factory=JOB_REGISTRIES)
    assert rc == 0 and "2 already done, 0 to run" in text and "submitted" not in text
    got = rows(out)
    assert got.keys() == expected.keys()
    for cid, want in expected.items():
        have = got[cid]
        assert (have["status"], have["model"], have["scorer"], have["error"]) == \
            (want["status"], want["model"], want["scorer"], want["error"])
        for key, value in want["metrics"].items():
            assert have["metrics"][key] == pytest.approx(value, abs=1e-6), key
        assert have["thresholds"] == pytest.approx(want["thresholds"], abs=1e-6)
        assert (out / have["artifacts"]["checkpoint"]).is_file()


@pytest.mark.slow
def test_rerun_collects_dead_job_and_resubmits(tmp_path, tiny_data, job_env):
    """A job that died without rows (dead pid, no result file) gets failed rows, then a new job."""
    regs = executor_registries()

    def only_threshold(raw):  # one unit: one job to wait for
        raw = raw.replace('[[models]]\nname = "ae"\nparams = { channels = [4, 8], strides = [2, 2], lr = 1e-3 }\n', "")
        return raw.replace('[[scorers]]\nname = "residual"\n', "")

    path = write_config(tmp_path, tiny_data, "dead", edit=only_threshold)
    out = tmp_path / "dead"
    from brats_ad.bench.config import load_bench_config
    from brats_ad.bench.matrix import expand

    matrix = expand(load_bench_config(path), regs)
    assert [u.label for u in matrix.units] == ["flair-threshold 2D seed 0"]
    unit = matrix.units[0]
    dead = _dead_pid()
    (out / "jobs" / dead).mkdir(parents=True)
    save_jobs(out, {unit.unit_id: {"label": unit.label, "cells": [c.cell_id for c in unit.cells], "job_id": dead,
                                   "cluster": "local", "folder": f"jobs/{dead}", "submitted": "2024-01-01T00:00:00",
                                   "run_id": "old-run", "state": "RUNNING", "error": None, "previous": []}})
    rc, text = bench(path, regs, executor="slurm", executor_params=SUBMITIT_LOCAL, registries_factory=JOB_REGISTRIES)
    assert rc == 0 and "submitted 1 job(s) (1 resubmitted)" in text
    record = load_jobs(out)[unit.unit_id]
    assert record["previous"] == [dead] and record["job_id"] != dead
    cell = unit.cells[0].cell_id
    row = json.loads((out / "cells" / f"{cell}.json").read_text())
    assert row["status"] == "failed" and row["error"] == f"JobFailed: job {dead} ended without a result (no result file)"

    from brats_ad.bench.status import bench_status

    assert bench_status(out).counts["failed"] == 0  # the failed cell is being retried: running (or done)
    # wait = true: the rerun leaves the running job alone, waits for it and collects it
    rc, text = bench(path, regs, executor="slurm", executor_params={**SUBMITIT_LOCAL, "wait": True},
                     registries_factory=JOB_REGISTRIES)
    assert rc == 0 and "submitted" not in text
    assert load_jobs(out)[unit.unit_id]["state"] == "COMPLETED"
    assert bench_status(out, refresh=False).counts == {"done": 1, "running": 0, "failed": 0, "pending": 0}


def _dead_pid() -> str:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return str(proc.pid)


# -- job states from result files and pids ------------------------------------------------------------
def test_job_state_reads_result_file_then_pid(tmp_path):
    from submitit.core.utils import JobPaths, cloudpickle_dump

    record = {"job_id": str(os.getpid()), "cluster": "local", "folder": "jobs/a"}
    (tmp_path / "jobs" / "a").mkdir(parents=True)
    assert job_state(tmp_path, record) == ("RUNNING", None)  # this very process is alive
    paths = JobPaths(tmp_path / "jobs" / "a", record["job_id"], 0)
    cloudpickle_dump(("error", "Traceback (most recent call last):\n  ...\nValueError: boom\n"), paths.result_pickle)
    assert job_state(tmp_path, record) == ("FAILED", "ValueError: boom")
    cloudpickle_dump(("success", {"failed": 0}), paths.result_pickle)
    assert job_state(tmp_path, record) == ("COMPLETED", None)
    dead = {"job_id": _dead_pid(), "cluster": "local", "folder": "jobs/b"}
    state, error = job_state(tmp_path, dead)
    assert state == "FAILED" and error == f"job {dead['job_id']} ended without a result (no result file)"


# -- building executors ------------------------------------------------------------------------------
def test_executor_table_parsed_and_overridden():
    base = {"models": [{"name": "ae"}], "scorers": [{"name": "residual"}]}
    cfg = parse_bench_config({**base, "executor": {"name": "slurm", "partition": "gpu", "mem_gb": 64}})
    assert cfg.executor == ExecutorSection("slurm", {"partition": "gpu", "mem_gb": 64})
    merged = cfg.with_overrides(executor_params={"partition": "a100", "gpus_per_node": 2, "timeout_min": None})
    assert merged.executor == ExecutorSection("slurm", {"partition": "a100", "mem_gb": 64, "gpus_per_node": 2})
    assert cfg.with_overrides(executor="local").executor == ExecutorSection("local", {})
    assert parse_bench_config(base).executor == ExecutorSection("local", {})
    assert cfg.config_hash() == parse_bench_config(base).config_hash()  # where it runs is not hashed
    with pytest.raises(ConfigError, match="executor.name"):
        parse_bench_config({**base, "executor": {"name": 3}})


def test_make_executor_checks_names_and_parameters():
    regs = executor_registries()
    slurm = make_executor("slurm", {"partition": "gpu", "gpus_per_node": 2}, regs)
    assert isinstance(slurm, SlurmExecutor) and slurm.partition == "gpu" and slurm.gpus_per_node == 2
    with pytest.raises(ConfigError, match="has no parameter 'partiton'; did you mean 'partition'"):
        make_executor("slurm", {"partiton": "gpu"}, regs)
    with pytest.raises(ConfigError, match="timeout_min must be an integer >= 1, got 0"):
        make_executor("slurm", {"timeout_min": 0}, regs)
    with pytest.raises(UnknownComponent, match="did you mean 'slurm'"):
        make_executor("slrum", {}, regs)
    with pytest.raises(ConfigError, match='workers must be an integer >= 1 or "per-gpu", got 0'):
        make_executor("local", {"workers": 0}, regs)
    with pytest.raises(ConfigError, match="executor 'local' has no parameter 'partition'"):
        make_executor("local", {"partition": "gpu"}, regs)


def test_local_needs_no_plugin():
    from brats_ad.registry import Registries

    assert isinstance(make_executor("local", {}, Registries.empty()), LocalExecutor)
    with pytest.raises(ConfigError, match="'local': invalid parameters"):
        make_executor("local", {"partition": "gpu"}, Registries.empty())


def test_plugin_registers_local_and_slurm_through_the_hook():
    from brats_ad.plugins import load_registries, make_plugin_manager
    from brats_ad.registry import Source

    pm = make_plugin_manager(entrypoints=False)
    if not pm.has_plugin("brats_ad.bench.executors.plugin"):
        import brats_ad.bench.executors.plugin as plugin

        pm.register_plugin(plugin, "brats_ad.bench.executors.plugin",
                           Source("brats_ad.bench.executors.plugin", "brats-ad", None))
    regs = load_registries(pm)
    assert regs.executors.names() == ["local", "slurm"]
    assert regs.executors.get("slurm").params["timeout_min"] == 240


def test_slurm_without_sbatch_says_how_to_try_locally(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(ConfigError, match=r"'sbatch' is not on PATH.*cluster = \"local\""):
        SlurmExecutor().make_submitit(tmp_path)


def test_per_gpu_without_gpus_runs_in_process_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
    runner = StubRunner(tmp_path)
    work = [("unit", ["cell"])]
    assert LocalExecutor(workers="per-gpu").run(runner, work) == Outcome(failed=0)
    assert runner.calls == [work]
    assert 'workers = "per-gpu" but no GPU is visible' in runner.buf.getvalue()


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert visible_gpus() == ["2", "3"]


def test_registries_spec_names_a_module_function():
    from brats_ad.plugins import get_registries

    assert registries_spec(None) is None and registries_spec("a.b:c") == "a.b:c"
    assert registries_spec(get_registries) == "brats_ad.plugins:get_registries"
    with pytest.raises(ConfigError, match="module-level function"):
        registries_spec(lambda: None)
