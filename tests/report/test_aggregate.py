"""Rows -> cells: reading and checking results.jsonl, seeds summarised, ranking by metric name."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from brats_ad.errors import ConfigError, DataError
from brats_ad.report.aggregate import (
    best_values,
    build_cells,
    metric_columns,
    metric_direction,
    rank,
    read_rows,
)


def _row(**over) -> dict:
    row = {"schema_version": 1, "status": "done", "model": "ae", "model_params": {"z": 8},
           "scorer": "residual", "scorer_params": {}, "dims": 2, "seed": 0,
           "metrics": {"voxel_auprc_score": 0.5}}
    row.update(over)
    return row


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_metric_direction_comes_from_the_name():
    assert metric_direction("voxel_auprc_score") == 1
    assert metric_direction("recon_error") == -1
    assert metric_direction("val_loss") == -1
    with pytest.raises(ConfigError, match="'dice_valbest_std'.*'_score'"):
        metric_direction("dice_valbest_std")


def test_mean_and_sample_std_over_seeds(tmp_path):
    rows = read_rows(_write(tmp_path / "r.jsonl", [
        _row(seed=0, metrics={"voxel_auprc_score": 0.40}),
        _row(seed=1, metrics={"voxel_auprc_score": 0.50}),
        _row(seed=2, metrics={"voxel_auprc_score": 0.60}),
    ]))
    (cell,) = build_cells(rows)
    stat = cell.stat("voxel_auprc_score")
    assert (stat.n, cell.seeds) == (3, (0, 1, 2))
    assert stat.mean == pytest.approx(0.5)
    assert stat.std == pytest.approx(0.1)  # ddof=1: sqrt((0.01 + 0 + 0.01) / 2)


def test_one_seed_has_no_std_and_nan_counts_as_missing(tmp_path):
    rows = read_rows(_write(tmp_path / "r.jsonl", [
        _row(seed=0, metrics={"voxel_auprc_score": 0.4}),
        '{"schema_version": 1, "status": "done", "model": "ae", "model_params": {"z": 8}, "scorer": "residual",'
        ' "scorer_params": {}, "dims": 2, "seed": 1, "metrics": {"voxel_auprc_score": NaN}}',
    ]))
    (cell,) = build_cells(rows)
    stat = cell.stat("voxel_auprc_score")
    assert (stat.mean, stat.std, stat.n) == (0.4, None, 1)


def test_cells_group_by_model_params_scorer_params_and_dims(tmp_path):
    rows = read_rows(_write(tmp_path / "r.jsonl", [
        _row(), _row(seed=1), _row(model_params={"z": 16}), _row(dims=3), _row(scorer_params={"power": 2}),
    ]))
    cells = build_cells(rows)
    assert len(cells) == 4
    labels = sorted((c.dims, c.model_label, c.scorer_label) for c in cells)
    assert labels == [(2, "ae (z=16)", "residual (power=-)"), (2, "ae (z=8)", "residual (power=-)"),
                      (2, "ae (z=8)", "residual (power=2)"), (3, "ae (z=8)", "residual (power=-)")]


def test_rank_sorts_by_the_direction_of_the_primary_name(tmp_path):
    rows = read_rows(_write(tmp_path / "r.jsonl", [
        _row(model="a", metrics={"voxel_auprc_score": 0.2, "recon_error": 0.1}),
        _row(model="b", metrics={"voxel_auprc_score": 0.9, "recon_error": 0.5}),
        _row(model="c", metrics={"voxel_auprc_score": 0.5}),  # no recon_error: ranked last
    ]))
    cells = build_cells(rows)
    assert [c.key.model for c in rank(cells, "voxel_auprc_score")] == ["b", "c", "a"]
    assert [c.key.model for c in rank(cells, "recon_error")] == ["a", "b", "c"]
    assert best_values(cells, "recon_error", 3) == 0.1
    assert best_values(cells, "voxel_auprc_score", 3) == 0.9


def test_metric_columns_known_first_extras_by_name_oracle_last(tmp_path):
    rows = read_rows(_write(tmp_path / "r.jsonl", [_row(metrics={
        "oracle_dice_score": 0.5, "zeta_score": 1.0, "alpha_error": 2.0, "voxel_auprc_score": 0.3,
        "voxel_auroc_score": 0.7, "dice_valbest_std": 0.1, "voxel_auroc_ci": [0.1, 0.2]})]))
    assert metric_columns(rows) == ["voxel_auroc_score", "voxel_auprc_score", "alpha_error", "zeta_score",
                                    "oracle_dice_score"]


def test_a_rerun_cell_id_keeps_its_last_row(tmp_path):
    rows = read_rows(_write(tmp_path / "r.jsonl", [
        _row(cell_id="x", status="failed", error="TrainingDiverged: nan", metrics={}),
        _row(cell_id="y"),
        _row(cell_id="x", metrics={"voxel_auprc_score": 0.7}),
    ]))
    assert [(r.line, r.get("cell_id"), r.done) for r in rows] == [(2, "y", True), (3, "x", True)]


@pytest.mark.parametrize("line, message", [
    ('{"status": "done", "model": "ae"', r"r\.jsonl:3: not valid JSON"),
    ('[1, 2]', r"r\.jsonl:3: expected a JSON object per line, got list"),
    (json.dumps(_row(dims=4)), r"r\.jsonl:3: 'dims' must be 2 or 3, got 4"),
    (json.dumps({k: v for k, v in _row().items() if k != "seed"}), r"r\.jsonl:3: missing key 'seed'"),
    (json.dumps(_row(status="running")), r"r\.jsonl:3: 'status' must be 'done' or 'failed'"),
    (json.dumps(_row(metrics=None)), r"r\.jsonl:3: a 'done' row needs a 'metrics' object"),
    (json.dumps(_row(metrics={"voxel_auprc_score": "high"})), r"r\.jsonl:3: metric 'voxel_auprc_score' must be a number"),
    (json.dumps(_row(schema_version=2)), r"r\.jsonl:3: schema_version 2 is newer"),
])
def test_a_malformed_row_names_its_line(tmp_path, line, message):
    path = _write(tmp_path / "r.jsonl", [_row(), "", line])
    with pytest.raises(DataError, match=message) as info:
        read_rows(path)
    assert "\n" not in str(info.value)


def test_missing_results_file_says_what_to_pass(tmp_path):
    with pytest.raises(DataError, match="no results file at .*brats-ad bench"):
        read_rows(tmp_path / "nope.jsonl")


def test_fixture_bench_cells(bench):
    cells = build_cells(read_rows(bench))
    assert len(cells) == 8
    gan3 = next(c for c in cells if (c.dims, c.key.model, c.key.scorer) == (3, "ganomaly", "residual"))
    assert (gan3.seeds, [r.seed for r in gan3.failed]) == ((0,), [1])
    gan2 = next(c for c in cells if (c.dims, c.key.model, c.key.scorer) == (2, "ganomaly", "residual"))
    stat = gan2.stat("voxel_auprc_score")
    assert (stat.mean, stat.n) == (pytest.approx(0.45), 2)
    assert stat.std == pytest.approx(math.sqrt(2) * 0.01)
    assert [c.constant_map for c in cells if c.key.scorer == "latent"] == [True, True]
