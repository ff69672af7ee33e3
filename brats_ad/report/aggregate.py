"""Results rows -> leaderboard data: read and check ``results.jsonl``, group seeds into cells, rank.

Plain Python on purpose: a results file holds at most a few thousand rows, and staying off
pandas keeps the leaderboard fast to import and free of torch. Nothing here formats text.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from brats_ad.errors import ConfigError, DataError

SCHEMA_VERSION = 1
BASELINE_MODEL = "flair-threshold"
STATUSES = ("done", "failed")

# Known metrics in display order with their column headers; any other ``*_score``/``*_error``/
# ``*_loss`` metric follows in name order. The oracle comes last, set apart from the fair columns.
KNOWN_METRICS: tuple[tuple[str, str], ...] = (
    ("voxel_auroc_score", "Voxel AUROC"),
    ("voxel_auprc_score", "Voxel AUPRC"),
    ("dice_valbest_score", "Dice (val-best)"),
    ("dice_healthyq_score", "Dice (healthy-q)"),
    ("sample_auroc_score", "Sample AUROC"),
    ("sample_auprc_score", "Sample AUPRC"),
)
ORACLE_METRICS: tuple[tuple[str, str], ...] = (("oracle_dice_score", "⌈Dice⌉ (oracle)"),)
_DIRECTED_SUFFIXES = {"_score": 1, "_error": -1, "_loss": -1}


# -- metric names ----------------------------------------------------------------------------------
def metric_direction(name: str) -> int:
    """+1 when higher is better (``*_score``), -1 when lower is better (``*_error``, ``*_loss``)."""
    for suffix, sign in _DIRECTED_SUFFIXES.items():
        if name.endswith(suffix):
            return sign
    raise ConfigError(
        f"cannot rank by metric {name!r}: its name carries no direction; expected a name ending in "
        "'_score' (higher is better), '_error' or '_loss' (lower is better)"
    )


def is_ranked_metric(name: str) -> bool:
    return any(name.endswith(suffix) for suffix in _DIRECTED_SUFFIXES)


def metric_header(name: str) -> str:
    for key, header in KNOWN_METRICS + ORACLE_METRICS:
        if key == name:
            return header
    return name


# -- reading ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One results row and the line of ``results.jsonl`` it came from."""

    line: int
    data: Mapping[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def done(self) -> bool:
        return self.data["status"] == "done"

    @property
    def seed(self) -> int:
        return int(self.data["seed"])

    def metric(self, name: str) -> float | None:
        """The metric as a finite float, or None when absent, null or NaN."""
        value = (self.data.get("metrics") or {}).get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None

    def artifact(self, name: str) -> str | None:
        value = (self.data.get("artifacts") or {}).get(name)
        return value if isinstance(value, str) and value else None


def read_rows(path: Path) -> list[Row]:
    """Parse and check every line; a bad line raises a one-line :class:`DataError` naming it.

    A ``cell_id`` that appears twice keeps its last row: a resumed bench appends the rerun of a
    failed cell after the failure.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"no results file at {path}; pass the results.jsonl (or the folder) written by "
            "'brats-ad bench'"
        )
    rows: list[Row] = []
    for lineno, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{where}: not valid JSON ({exc.msg}, column {exc.colno}); fix or delete that line "
                "(a killed bench can leave a partial last line) and rerun"
            ) from None
        if not isinstance(data, dict):
            raise DataError(f"{where}: expected a JSON object per line, got {type(data).__name__}; "
                            "each line must be one results row")
        _check_row(data, where)
        rows.append(Row(lineno, data))
    if not rows:
        raise DataError(f"{path} holds no results row; run 'brats-ad bench' (or wait for its first cell)")
    by_cell: dict[Any, Row] = {}
    for row in rows:
        cell_id = row.get("cell_id")
        by_cell[cell_id if cell_id is not None else ("#line", row.line)] = row
    return sorted(by_cell.values(), key=lambda r: r.line)


def _check_row(data: Mapping[str, Any], where: str) -> None:
    version = data.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise DataError(f"{where}: schema_version {version!r} is newer than this brats_ad reads "
                        f"({SCHEMA_VERSION}); upgrade brats_ad")
    expected: dict[str, Callable[[Any], bool]] = {
        "status": lambda v: v in STATUSES,
        "model": lambda v: isinstance(v, str) and bool(v),
        "scorer": lambda v: isinstance(v, str) and bool(v),
        "dims": lambda v: v in (2, 3) and not isinstance(v, bool),
        "seed": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "model_params": lambda v: v is None or isinstance(v, dict),
        "scorer_params": lambda v: v is None or isinstance(v, dict),
    }
    for key, ok in expected.items():
        if key not in data and key.endswith("_params"):
            continue
        if key not in data:
            raise DataError(f"{where}: missing key {key!r}; every results row needs status, model, "
                            "scorer, dims and seed")
        if not ok(data[key]):
            want = {"status": "'done' or 'failed'", "dims": "2 or 3", "seed": "an integer",
                    "model": "a non-empty string", "scorer": "a non-empty string"}.get(key, "an object")
            raise DataError(f"{where}: {key!r} must be {want}, got {data[key]!r}")
    if data["status"] == "done":
        metrics = data.get("metrics")
        if not isinstance(metrics, dict):
            raise DataError(f"{where}: a 'done' row needs a 'metrics' object, got {metrics!r}")
        for name, value in metrics.items():
            if is_ranked_metric(name) and value is not None and (
                    isinstance(value, bool) or not isinstance(value, (int, float))):
                raise DataError(f"{where}: metric {name!r} must be a number or null, got {value!r}")


# -- cells -----------------------------------------------------------------------------------------
def canonical(value: Any) -> str:
    """Stable text for a JSON value (params): equal configurations compare equal."""
    return json.dumps(value if value is not None else {}, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, order=True)
class CellKey:
    dims: int
    model: str
    model_params: str  # canonical JSON
    scorer: str
    scorer_params: str  # canonical JSON


def cell_key(row: Row) -> CellKey:
    return CellKey(int(row.get("dims")), row.get("model"), canonical(row.get("model_params")),
                   row.get("scorer"), canonical(row.get("scorer_params")))


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (``ddof=1``; None for one seed) over seeds."""

    mean: float | None
    std: float | None
    n: int


def summarise(values: Sequence[float]) -> Stat:
    if not values:
        return Stat(None, None, 0)
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return Stat(mean, None, len(values))
    var = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return Stat(mean, math.sqrt(var), len(values))


@dataclass(frozen=True)
class Cell:
    """The seeds of one (model, model params, scorer, scorer params, dims) configuration."""

    key: CellKey
    model_label: str
    scorer_label: str
    rows: tuple[Row, ...]  # done rows, by seed
    failed: tuple[Row, ...]  # failed rows, by seed
    stats: Mapping[str, Stat] = field(repr=False)

    @property
    def dims(self) -> int:
        return self.key.dims

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.rows)

    @property
    def is_baseline(self) -> bool:
        return self.key.model == BASELINE_MODEL

    @property
    def constant_map(self) -> bool:
        return any(r.get("scorer_map_kind") == "constant" for r in self.rows + self.failed)

    def stat(self, metric: str) -> Stat:
        return self.stats.get(metric, Stat(None, None, 0))

    @property
    def label(self) -> str:
        return f"{self.model_label} + {self.scorer_label}"


def _param_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _labels(rows: Iterable[Row], kind: str) -> dict[tuple[str, str], str]:
    """``name`` or ``name (k=v, ...)`` with only the params that tell configurations apart.

    Keys are compared within one dims (``spatial_dims`` and friends differ between 2D and 3D
    by construction and would only add noise); the union over dims names every label.
    """
    per_name_dims: dict[tuple[str, int], dict[str, Mapping[str, Any]]] = {}
    for row in rows:
        params = row.get(f"{kind}_params") or {}
        per_name_dims.setdefault((row.get(kind), int(row.get("dims"))), {})[canonical(params)] = params
    varying: dict[str, set[str]] = {}
    for (name, _), configs in per_name_dims.items():
        keys = varying.setdefault(name, set())
        all_keys = set().union(*(set(p) for p in configs.values()))
        for k in all_keys:
            if len({canonical(p.get(k, "<unset>")) for p in configs.values()}) > 1:
                keys.add(k)
    labels: dict[tuple[str, str], str] = {}
    for (name, _), configs in per_name_dims.items():
        for canon, params in configs.items():
            shown = [f"{k}={_param_text(params.get(k, '-'))}" for k in sorted(varying[name])]
            labels[(name, canon)] = f"{name} ({', '.join(shown)})" if shown else name
    return labels


def metric_columns(rows: Sequence[Row]) -> list[str]:
    """Ranked metrics present in any done row: known ones first, extras by name, oracle last."""
    present = {name for r in rows if r.done for name in (r.get("metrics") or {}) if is_ranked_metric(name)}
    known = [k for k, _ in KNOWN_METRICS if k in present]
    oracle = [k for k, _ in ORACLE_METRICS if k in present]
    extras = sorted(present - set(known) - set(oracle))
    return known + extras + oracle


def build_cells(rows: Sequence[Row]) -> list[Cell]:
    """Group rows into cells (sorted by key); metrics are summarised over the done seeds."""
    model_labels = _labels(rows, "model")
    scorer_labels = _labels(rows, "scorer")
    groups: dict[CellKey, list[Row]] = {}
    for row in rows:
        groups.setdefault(cell_key(row), []).append(row)
    metrics = metric_columns(rows)
    cells = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda r: (r.seed, r.line))
        done = tuple(r for r in members if r.done)
        failed = tuple(r for r in members if not r.done)
        stats = {m: summarise([v for r in done if (v := r.metric(m)) is not None]) for m in metrics}
        cells.append(Cell(key, model_labels[(key.model, key.model_params)],
                          scorer_labels[(key.scorer, key.scorer_params)], done, failed, stats))
    return cells


def rank(cells: Iterable[Cell], primary: str) -> list[Cell]:
    """Best first by the primary metric's mean; cells without it last; ties by label."""
    sign = metric_direction(primary)

    def order(cell: Cell) -> tuple:
        mean = cell.stat(primary).mean
        return (mean is None, -sign * mean if mean is not None else 0.0, cell.model_label,
                cell.scorer_label, cell.key)

    return sorted(cells, key=order)


def better(a: float, b: float, metric: str) -> bool:
    """Whether ``a`` is strictly better than ``b`` for ``metric``."""
    return a * metric_direction(metric) > b * metric_direction(metric)


def best_values(cells: Sequence[Cell], metric: str, digits: int) -> float | None:
    """The best mean shown (rounded to ``digits``): every cell that displays it is best."""
    means = [round(m, digits) for c in cells if (m := c.stat(metric).mean) is not None]
    if not means:
        return None
    return max(means) if metric_direction(metric) > 0 else min(means)


# -- protocol and provenance -----------------------------------------------------------------------
def distinct(rows: Iterable[Row], getter: Callable[[Mapping[str, Any]], Any]) -> list[Any]:
    """The distinct non-null values of ``getter(row)``, in a stable (canonical JSON) order."""
    seen: dict[str, Any] = {}
    for row in rows:
        try:
            value = getter(row.data)
        except (KeyError, TypeError, AttributeError):
            continue
        if value is not None:
            seen.setdefault(canonical(value), value)
    return [seen[k] for k in sorted(seen)]


def dig(*keys: str) -> Callable[[Mapping[str, Any]], Any]:
    """Getter for a nested key path, e.g. ``dig("dataset", "name")``."""

    def get(data: Mapping[str, Any]) -> Any:
        value: Any = data
        for key in keys:
            value = value[key]
        return value

    return get
