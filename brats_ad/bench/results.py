"""The results store: one JSON file per cell (the record), ``results.jsonl`` rebuilt from them.

Many writers at once (parallel processes, SLURM jobs) are safe by construction:

* each cell's row is written to ``cells/<cell_id>.json`` atomically (temp file in the same
  folder, fsync, ``os.replace``), so a killed process leaves a complete row or none;
* ``results.jsonl`` is then rebuilt from every cell file under an exclusive ``fcntl`` lock on
  ``results.lock`` and replaced atomically, so readers never see half a line and concurrent
  rebuilds never interleave. A rerun of a failed cell replaces its row: one row per cell.

Rows are ordered by ``created`` then ``cell_id``; the schema is in ``notes/common.md``
(``SCHEMA_VERSION``). Finished cells (``status == "done"``) are skipped by a rerun.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

from brats_ad.io import jsonable, write_json_atomic, write_text_atomic

SCHEMA_VERSION = 1
RESULTS = "results.jsonl"
CELLS = "cells"
LOCK = "results.lock"

#: The keys every row has (the leaderboard's contract).
ROW_KEYS = (
    "schema_version", "run_id", "cell_id", "status", "error", "model", "model_params", "scorer",
    "scorer_params", "scorer_map_kind", "dims", "seed", "metrics", "thresholds", "n_cases",
    "n_skipped_dice", "timings", "artifacts", "config_hash", "dataset", "protocol", "device",
    "versions", "git_revision", "created",
)
METRIC_KEYS = (
    "voxel_auroc_score", "voxel_auprc_score", "dice_valbest_score", "dice_valbest_std",
    "dice_healthyq_score", "dice_healthyq_std", "oracle_dice_score", "sample_auroc_score",
    "sample_auprc_score", "voxel_auroc_ci", "voxel_auprc_ci",
)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (``fcntl.flock``) held for the block; a no-op where missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: single writer assumed
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class ResultsStore:
    """Cell rows under ``<out>/cells/`` and the derived ``<out>/results.jsonl``."""

    def __init__(self, out: Path | str) -> None:
        self.out = Path(out)
        self.cells_dir = self.out / CELLS
        self.results_path = self.out / RESULTS

    def cell_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.json"

    def artifact_dir(self, cell_id: str) -> Path:
        """Where a cell's curves and gallery go (``cells/<cell_id>/``)."""
        return self.cells_dir / cell_id

    def relpath(self, path: Path) -> str:
        return os.path.relpath(path, self.out)

    def read(self, cell_id: str) -> dict[str, Any] | None:
        path = self.cell_path(cell_id)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # absent, or damaged by hand: the cell runs again

    def status(self, cell_id: str) -> str | None:
        row = self.read(cell_id)
        return None if row is None else row.get("status")

    def is_done(self, cell_id: str) -> bool:
        return self.status(cell_id) == "done"

    def rows(self) -> list[dict[str, Any]]:
        """Every cell row, ordered by creation time then id."""
        rows = []
        if self.cells_dir.is_dir():
            for path in self.cells_dir.glob("*.json"):
                try:
                    rows.append(json.loads(path.read_text()))
                except (OSError, ValueError):
                    continue
        return sorted(rows, key=lambda r: (str(r.get("created", "")), str(r.get("cell_id", ""))))

    def write(self, row: Mapping[str, Any]) -> None:
        """Record one cell (atomically) and rebuild ``results.jsonl`` under the lock."""
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"results row lacks {missing}; this is a bug in the bench runner")
        write_json_atomic(self.cell_path(str(row["cell_id"])), row)
        self.rebuild()

    def rebuild(self) -> None:
        """``results.jsonl`` = every cell row, one per line; atomic replace under the lock."""
        with file_lock(self.out / LOCK):
            lines = [json.dumps(jsonable(r), sort_keys=False, allow_nan=False) for r in self.rows()]
            write_text_atomic(self.results_path, "".join(line + "\n" for line in lines))
