"""``brats-ad status OUTDIR``: done, running, failed and pending cells of a bench folder.

Reads only the folder (no config, no torch): the matrix from the newest ``runs/<run_id>.json``,
each cell's row from ``cells/``, and for out-of-process executors the job of each unit from
``jobs.json`` (its state asked from submitit's result file, then the scheduler). A cell is

* ``done`` / ``failed``: its row says so (a failed cell whose unit has a new active job is
  ``running``: it is being retried);
* ``running``: no row yet and its unit's job is queued or running;
* ``failed`` also when its unit's job ended without writing the row (killed, out of memory,
  time limit): the error names the job's state;
* ``pending``: nothing yet (not submitted, or an in-process run still on its way).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brats_ad.bench.results import ResultsStore
from brats_ad.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

STATES = ("done", "running", "failed", "pending")


@dataclass(frozen=True)
class CellStatus:
    cell_id: str
    unit_id: str | None
    label: str
    status: str
    error: str | None = None


@dataclass(frozen=True)
class UnitStatus:
    unit_id: str
    label: str
    job_id: str | None
    job_state: str | None
    counts: dict[str, int]
    error: str | None = None


@dataclass(frozen=True)
class BenchStatus:
    out: str
    run_id: str | None
    counts: dict[str, int]
    units: list[UnitStatus] = field(default_factory=list)
    cells: list[CellStatus] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Nothing running or pending: every cell has its final row (done or failed)."""
        return self.counts["running"] == 0 and self.counts["pending"] == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "finished": self.finished}


def bench_status(out: Path | str, *, refresh: bool = True) -> BenchStatus:
    """The status of every cell of the bench folder ``out``; ``refresh=False`` trusts the states
    recorded in ``jobs.json`` instead of asking the scheduler."""
    out = Path(out)
    if not out.is_dir():
        raise DataError(f"bench folder {out} does not exist; pass the --out folder of a 'brats-ad bench' run")
    run = _latest_run(out)
    store = ResultsStore(out)
    rows = {str(r.get("cell_id")): r for r in store.rows()}
    if run is None and not rows:
        raise DataError(f"{out} holds no bench run (no runs/*.json, no cells/); run 'brats-ad bench --out {out}' first")
    from brats_ad.bench.executors.jobs import is_active, load_jobs

    records = load_jobs(out)
    units: list[tuple[str, str, list[tuple[str, str]]]] = []  # (unit_id, label, [(cell_id, label)])
    for u in (run or {}).get("units", []):
        units.append((u["unit_id"], u.get("label", ""), [(c["cell_id"], c.get("label", "")) for c in u["cells"]]))
    if run is not None and not units:  # a run file from before units were recorded
        units = [(None, "", [(cid, "") for cid in run.get("cells", [])])]  # type: ignore[list-item]
    known = {cid for _, _, cells in units for cid, _ in cells}
    extra = [cid for cid in rows if cid not in known]  # rows of cells no longer in the matrix
    if extra:
        units.append((None, "(not in the latest matrix)", [(cid, "") for cid in extra]))  # type: ignore[arg-type]

    cell_status: list[CellStatus] = []
    unit_status: list[UnitStatus] = []
    for unit_id, unit_label, cells in units:
        record = records.get(unit_id) if unit_id else None
        state, job_error = _state(out, record, refresh)
        active = is_active(state)
        counts = dict.fromkeys(STATES, 0)
        for cid, clabel in cells:
            row = rows.get(cid)
            label = clabel or _row_label(row) or cid
            if row is not None and row.get("status") == "done":
                status, error = "done", None
            elif active:
                status, error = "running", None
            elif row is not None:
                status, error = "failed", row.get("error")
            elif record is not None:
                status, error = "failed", job_error or f"job {record['job_id']} ended {state} without writing this cell"
            else:
                status, error = "pending", None
            counts[status] += 1
            cell_status.append(CellStatus(cid, unit_id, label, status, error))
        unit_status.append(UnitStatus(unit_id or "-", unit_label or "-", record.get("job_id") if record else None,
                                      state, counts, job_error))
    totals = dict.fromkeys(STATES, 0)
    for c in cell_status:
        totals[c.status] += 1
    return BenchStatus(str(out), (run or {}).get("run_id"), totals, unit_status, cell_status)


def _state(out: Path, record: dict[str, Any] | None, refresh: bool) -> tuple[str | None, str | None]:
    if record is None:
        return None, None
    if not refresh:
        return record.get("state"), record.get("error")
    from brats_ad.bench.executors.jobs import job_state

    try:
        return job_state(out, record)
    except Exception as exc:  # noqa: BLE001 - status must show something even if a query fails
        return "UNKNOWN", f"could not query job {record.get('job_id')}: {exc}"


def _latest_run(out: Path) -> dict[str, Any] | None:
    runs = []
    for path in (out / "runs").glob("*.json"):
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    if not runs:
        return None
    return max(runs, key=lambda r: (str(r.get("created", "")), str(r.get("run_id", ""))))


def _row_label(row: dict[str, Any] | None) -> str | None:
    if not row:
        return None
    return f"{row.get('model')} {row.get('dims')}D seed {row.get('seed')} x {row.get('scorer')}"


def print_status(status: BenchStatus, console: "Console", *, cells: bool = False) -> None:
    """Units with their job and counts, then the totals; ``cells`` adds one line per cell."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"bench {escape(status.out)}", title_justify="left")
    for col in ("unit", "job", "state", *STATES):
        table.add_column(col, no_wrap=col != "unit", justify="right" if col in STATES else "left")
    colours = {"done": "green", "running": "cyan", "failed": "red", "pending": "yellow"}
    for u in status.units:
        table.add_row(escape(u.label), u.job_id or "-", u.job_state or "-",
                      *(f"[{colours[s]}]{u.counts[s]}[/]" if u.counts[s] else "0" for s in STATES))
    console.print(table)
    c = status.counts
    console.print(f"cells: [green]{c['done']} done[/], [cyan]{c['running']} running[/], "
                  f"[red]{c['failed']} failed[/], [yellow]{c['pending']} pending[/]")
    for cell in status.cells:
        if cells or cell.status == "failed":
            note = f": {escape(cell.error)}" if cell.error else ""
            console.print(f"  [{colours[cell.status]}]{cell.status}[/] {escape(cell.label)} ({cell.cell_id}){note}")
    if not status.finished or c["failed"]:
        console.print("rerun the same 'brats-ad bench' command to collect finished jobs and retry failed cells")


def status_from_cli(out: Path | str, *, as_json: bool = False, cells: bool = False, console: "Console | None" = None) -> int:
    """``brats-ad status OUTDIR [--json] [--cells]``: prints the status; 0, or 1 if a cell failed."""
    status = bench_status(out)
    if as_json:
        import sys

        sys.stdout.write(json.dumps(status.to_dict(), indent=2) + "\n")
    else:
        from rich.console import Console

        print_status(status, console or Console(highlight=False), cells=cells)
    return 1 if status.counts["failed"] else 0


__all__ = ["BenchStatus", "CellStatus", "UnitStatus", "bench_status", "print_status", "status_from_cli"]
