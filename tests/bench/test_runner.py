"""End-to-end runs of a reduced config on tiny cases: rows, resume, failures, checkpoint reuse."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from brats_ad.bench.results import METRIC_KEYS, ROW_KEYS, ResultsStore
from brats_ad.bench.runner import run_bench

CONFIGS = Path(__file__).resolve().parent / "configs"  # reduced test configs


pytestmark = pytest.mark.slow


def write_config(tmp_path: Path, tiny_data: Path, name: str = "c.toml", edit=None) -> Path:
    """tiny.toml with root / cache / out pointing into the test's folders (cache shared)."""
    raw = (CONFIGS / "tiny.toml").read_text()
    raw = raw.replace('root = "data/tiny"', f'root = "{tiny_data}"\ncache = "{tiny_data.parent / "tiny-cache"}"')
    raw = raw.replace('out = "runs/bench/tiny"', f'out = "{tmp_path / "out"}"')
    if edit is not None:
        raw = edit(raw)
    path = tmp_path / name
    path.write_text(raw)
    return path


def run(path: Path, registries, **kw) -> tuple[int, str]:
    buf = io.StringIO()
    rc = run_bench(path, progress=False, console=Console(file=buf, width=200), registries=registries, **kw)
    return rc, buf.getvalue()


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_end_to_end_rows_match_schema_and_rerun_skips(tmp_path, tiny_data, registries):
    path = write_config(tmp_path, tiny_data)
    rc, text = run(path, registries)
    assert rc == 0, text
    out = tmp_path / "out"
    got = rows(out)
    assert sorted((r["model"], r["scorer"]) for r in got) == [("ae", "residual"), ("flair-threshold", "model-map")]
    assert "dropped flair-threshold x residual (2D): scorer requires reconstruction" in text
    for r in got:
        assert set(ROW_KEYS) <= set(r) and r["status"] == "done" and r["error"] is None
        assert set(METRIC_KEYS) <= set(r["metrics"])
        assert r["schema_version"] == 1 and r["dims"] == 2 and r["seed"] == 0
        assert r["n_cases"] == {"train": 2, "val": 2, "test": 2}
        assert r["protocol"]["sample_level"] == "slice" and r["protocol"]["training"] == "tumour-free"
        assert 0.0 <= r["metrics"]["voxel_auroc_score"] <= 1.0
        assert len(r["metrics"]["voxel_auroc_ci"]) == 2
        assert r["dataset"]["fingerprint"] and r["dataset"]["split_hash"] and r["config_hash"]
        assert r["versions"]["torch"] and "plugins" in r["versions"]
        for key in ("checkpoint", "history", "curves", "gallery"):
            assert r["artifacts"][key] is not None
        assert (out / r["artifacts"]["checkpoint"]).is_file() and (out / r["artifacts"]["curves"]).is_file()
        curves = json.loads((out / r["artifacts"]["curves"]).read_text())
        assert len(curves["roc"]["fpr"]) <= 21 and curves["roc"]["tpr"][-1] == pytest.approx(1.0)
        import numpy as np

        with np.load(out / r["artifacts"]["gallery"]) as g:
            assert g["map"].shape[1:] == g["seg"].shape[1:] == (24, 24) and g["image"].shape[1] == 4
    ae = next(r for r in got if r["model"] == "ae")
    assert (out / ae["artifacts"]["history"]).is_file()
    assert json.loads((out / "split.json").read_text())["test"]
    # rerun: nothing to do, the rows stay as they were
    rc, text = run(path, registries)
    assert rc == 0 and "0 to run" in text
    assert rows(out) == got


def test_failed_cell_recorded_and_matrix_continues(tmp_path, tiny_data, registries):
    def edit(raw):
        return raw + '\n[[models]]\nname = "nan-ae"\n\n[[scorers]]\nname = "broken"\n'

    rc, text = run(write_config(tmp_path, tiny_data, edit=edit), registries)
    assert rc == 1
    by = {(r["model"], r["scorer"]): r for r in rows(tmp_path / "out")}
    nan = by[("nan-ae", "residual")]
    assert nan["status"] == "failed" and nan["error"].startswith("TrainingDiverged: training diverged: loss 'recon' is nan")
    assert set(METRIC_KEYS) <= set(nan["metrics"]) and nan["metrics"]["voxel_auroc_score"] is None
    assert by[("ae", "broken")]["status"] == "failed" and "broken scorer" in by[("ae", "broken")]["error"]
    assert by[("ae", "residual")]["status"] == "done"  # same unit as the broken scorer
    assert by[("flair-threshold", "model-map")]["status"] == "done"


def test_resume_after_kill_runs_only_remaining_cells(tmp_path, tiny_data, registries):
    from _bench_plugins import KillSwitch

    def edit(raw):  # the kill scorer scores only the ae unit (the second one)
        return raw + '\n[[scorers]]\nname = "kill"\n'

    path = write_config(tmp_path, tiny_data, edit=edit)
    KillSwitch.armed = True
    try:
        with pytest.raises(KeyboardInterrupt):
            run(path, registries)
    finally:
        KillSwitch.armed = False
    out = tmp_path / "out"
    first = rows(out)
    assert [(r["model"], r["status"]) for r in first] == [("flair-threshold", "done")]
    KillSwitch.calls = 0
    rc, text = run(path, registries)
    assert rc == 0 and "1 already done, 2 to run" in text
    second = rows(out)
    assert len(second) == 3 and all(r["status"] == "done" for r in second)
    assert next(r for r in second if r["model"] == "flair-threshold") == first[0]
    assert KillSwitch.calls > 0


def test_added_scorer_reuses_checkpoint(tmp_path, tiny_data, registries):
    path = write_config(tmp_path, tiny_data)
    assert run(path, registries)[0] == 0
    out = tmp_path / "out"
    ckpt = out / next(r for r in rows(out) if r["model"] == "ae")["artifacts"]["checkpoint"]
    stamp = ckpt.stat().st_mtime_ns
    path = write_config(tmp_path, tiny_data, name="c2.toml",
                        edit=lambda raw: raw + '\n[[scorers]]\nname = "latent"\n')
    rc, text = run(path, registries)
    assert rc == 0 and "2 already done, 1 to run" in text
    new = [r for r in rows(out) if r["scorer"] == "latent"]
    assert len(new) == 1 and new[0]["timings"]["train_reused"] is True
    assert ckpt.stat().st_mtime_ns == stamp


def test_dry_run_prints_matrix_and_estimate(tmp_path, tiny_data, registries):
    rc, text = run(write_config(tmp_path, tiny_data), registries, dry_run=True)
    assert rc == 0
    assert "2 cells, 2 training units" in text and "estimated total" in text
    assert not (tmp_path / "out").exists()


def test_store_rebuild_is_one_row_per_cell(tmp_path):
    store = ResultsStore(tmp_path)
    base = {k: None for k in ROW_KEYS}
    store.write({**base, "cell_id": "a", "status": "failed", "created": "2024-01-01T00:00:00"})
    store.write({**base, "cell_id": "b", "status": "done", "created": "2024-01-01T00:00:01"})
    store.write({**base, "cell_id": "a", "status": "done", "created": "2024-01-01T00:00:02"})
    got = rows(tmp_path)
    assert [(r["cell_id"], r["status"]) for r in got] == [("b", "done"), ("a", "done")]
    assert store.is_done("a") and not store.is_done("c")
    with pytest.raises(ValueError, match="lacks"):
        store.write({"cell_id": "x"})


def test_max_cases_uses_a_seeded_subset_of_patients(tmp_path, tiny_data, registries):
    def own_cache_two_workers(raw: str) -> str:  # a fresh cache, so the process pool really prepares
        raw = raw.replace(f'cache = "{tiny_data.parent / "tiny-cache"}"', f'cache = "{tmp_path / "cache"}"\nworkers = 2')
        assert "workers = 2" in raw
        return raw

    rc, text = run(write_config(tmp_path, tiny_data, edit=own_cache_two_workers), registries, max_cases=5)
    assert rc == 0, text
    assert "using 5 of 6 cases" in text
    got = rows(tmp_path / "out")
    assert got and all(sum(r["n_cases"].values()) == 5 for r in got)
    assert all(r["protocol"]["sample_level"] == "slice" for r in got)
