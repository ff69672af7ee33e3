"""Per-epoch training history: ``history.jsonl`` + ``history.csv`` and a ``state.json``.

Every write rewrites the whole (small) file through a temp file and ``os.replace``, so a reader
(the report, a second terminal) never sees half a row and a crash never truncates the log.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from brats_ad.io import write_text_atomic

HISTORY_JSONL = "history.jsonl"
HISTORY_CSV = "history.csv"
STATE_JSON = "state.json"


def _json_value(value: Any) -> Any:
    """Non-finite floats as strings ("nan", "inf"): strict JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class History:
    """The rows of one run's log; :meth:`append` persists both files atomically."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.rows: list[dict[str, Any]] = []

    @property
    def jsonl_path(self) -> Path:
        return self.out_dir / HISTORY_JSONL

    @property
    def csv_path(self) -> Path:
        return self.out_dir / HISTORY_CSV

    def load(self, up_to_epoch: int) -> None:
        """Reload rows of epochs ``<= up_to_epoch`` (on resume; later ones never reached a checkpoint)."""
        self.rows = []
        if not self.jsonl_path.is_file():
            return
        for line in self.jsonl_path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if int(row.get("epoch", 0)) <= up_to_epoch:
                self.rows.append(row)
        self._write()

    def reset(self) -> None:
        self.rows = []
        for path in (self.jsonl_path, self.csv_path):
            path.unlink(missing_ok=True)

    def append(self, row: Mapping[str, Any]) -> None:
        self.rows.append({k: _json_value(v) for k, v in row.items()})
        self._write()

    def _write(self) -> None:
        lines = "".join(json.dumps(r, sort_keys=False) + "\n" for r in self.rows)
        write_text_atomic(self.jsonl_path, lines)
        epoch_rows = [r for r in self.rows if "event" not in r]  # CSV: one row per finished epoch
        write_text_atomic(self.csv_path, _csv(epoch_rows))


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buf.getvalue()


def write_state(out_dir: Path, state: Mapping[str, Any]) -> None:
    """``state.json``: status (running, finished, early_stopped, diverged, no_training), epoch, best, error."""
    payload = {k: _json_value(v) for k, v in state.items()}
    write_text_atomic(Path(out_dir) / STATE_JSON, json.dumps(payload, indent=2) + "\n")


def read_state(out_dir: Path) -> dict[str, Any] | None:
    path = Path(out_dir) / STATE_JSON
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
