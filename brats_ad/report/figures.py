"""Leaderboard figures: ROC/PR curves per dims, anomaly-map galleries, training-loss curves.

Rendering goes through matplotlib's object API with an explicit Agg canvas (no pyplot state, no
display) under the default style, and PNGs are saved without the ``Software`` tag, so the same
results give byte-identical files. A missing or unreadable artifact never fails the
leaderboard: the figure (or the cell within it) is skipped and a note says why.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brats_ad.report.aggregate import Cell, Row
from brats_ad.io import write_bytes_atomic

DPI = 100
MAX_GALLERY_SLICES = 4
_GRID = np.linspace(0.0, 1.0, 201)
_SEED_STYLES = ("-", "--", ":", "-.")
_FLAIR_NAMES = ("flair", "t2f")


@dataclass(frozen=True)
class FigureResult:
    """One figure of the leaderboard: its file (None when skipped) and notes on what is missing."""

    kind: str  # "curves" | "gallery" | "training"
    dims: int
    title: str
    path: Path | None
    notes: tuple[str, ...] = ()


def render_all(cells: Sequence[Cell], results_dir: Path, fig_dir: Path) -> list[FigureResult]:
    """Every figure for ``cells`` (already ranked per dims) into ``fig_dir``; PNGs left there
    by an earlier render that no longer belong are removed."""
    import matplotlib.style

    fig_dir.mkdir(parents=True, exist_ok=True)
    out: list[FigureResult] = []
    with matplotlib.style.context("default"):  # ignore the user's matplotlibrc: same bytes everywhere
        for dims in sorted({c.dims for c in cells}):
            ranked = [c for c in cells if c.dims == dims]
            out.append(curves_figure(ranked, dims, results_dir, fig_dir / f"roc_pr_{dims}d.png"))
        used: set[str] = set()
        for dims in sorted({c.dims for c in cells}):
            for model, members in _by_model(c for c in cells if c.dims == dims):
                name = _unique_name(f"gallery_{dims}d_{_slug(model)}.png", used)
                out.append(gallery_figure(members, model, dims, results_dir, fig_dir / name))
        for dims in sorted({c.dims for c in cells}):
            ranked = [c for c in cells if c.dims == dims]
            out.append(training_figure(ranked, dims, results_dir, fig_dir / f"training_{dims}d.png"))
    keep = {r.path.name for r in out if r.path is not None}
    for stale in sorted(fig_dir.glob("*.png")):
        if stale.name not in keep:
            stale.unlink()
    return out


# -- ROC and PR ------------------------------------------------------------------------------------
def _load_curves(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    data = json.loads(path.read_text(encoding="utf-8"))
    arrays = [np.asarray(data[a][b], dtype=float) for a, b in
              (("roc", "fpr"), ("roc", "tpr"), ("pr", "recall"), ("pr", "precision"))]
    if arrays[0].shape != arrays[1].shape or arrays[2].shape != arrays[3].shape or any(
            a.ndim != 1 or a.size < 2 for a in arrays):
        raise ValueError("curve arrays must be 1-D, of equal length per curve, with 2+ points")
    return tuple(arrays)  # type: ignore[return-value]


def _vertical_mean(xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One seed: its own points. Several: y interpolated on a shared x grid and averaged
    (vertical averaging, Fawcett 2006), so a cell is one line whatever its number of seeds."""
    if len(xs) == 1:
        order = np.lexsort((ys[0], xs[0]))
        return xs[0][order], ys[0][order]
    stacked = []
    for x, y in zip(xs, ys):
        order = np.lexsort((y, x))
        stacked.append(np.interp(_GRID, x[order], y[order]))
    return _GRID, np.mean(stacked, axis=0)


def curves_figure(cells: Sequence[Cell], dims: int, results_dir: Path, path: Path) -> FigureResult:
    title = f"ROC and PR curves, {dims}D"
    notes, lines = [], []
    for cell in cells:
        loaded, missing = [], []
        for row in cell.rows:
            try:
                loaded.append(_load_curves(_artifact_path(row, "curves", results_dir)))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                missing.append(f"seed {row.seed} ({_why(exc)})")
        if missing:
            notes.append(f"{cell.label}: no curves for {', '.join(missing)}")
        if loaded:
            roc = _vertical_mean([c[0] for c in loaded], [c[1] for c in loaded])
            pr = _vertical_mean([c[2] for c in loaded], [c[3] for c in loaded])
            lines.append((cell, roc, pr, len(loaded)))
    if not lines:
        return FigureResult("curves", dims, title, None, ("skipped: no cell has a readable curves artifact",
                                                         *notes))
    legend_rows = math.ceil(len(lines) / 2)
    height = 4.4 + 0.2 * legend_rows
    fig = _figure((11.0, height))
    fig.subplots_adjust(left=0.06, right=0.985, top=1 - 0.35 / height, bottom=(0.75 + 0.2 * legend_rows) / height,
                        wspace=0.2)
    ax_roc, ax_pr = fig.subplots(1, 2)
    colours = _colours(len(lines))
    for i, (cell, roc, pr, n) in enumerate(lines):
        style = dict(color="black", linestyle="--") if cell.is_baseline else dict(color=colours[i])
        label = f"{cell.label}" + (f" (mean of {n} seeds)" if n > 1 else "")
        ax_roc.plot(*roc, linewidth=1.4, label=label, **style)
        ax_pr.plot(*pr, linewidth=1.4, **style)
    ax_roc.plot([0, 1], [0, 1], color="0.7", linewidth=0.8, linestyle=":")
    for ax, (xl, yl, name) in zip((ax_roc, ax_pr), (("false positive rate", "true positive rate", "ROC"),
                                                   ("recall", "precision", "precision-recall"))):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(f"Voxel {name}, {dims}D")
        ax.grid(True, linewidth=0.4, color="0.9")
    fig.legend(loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8, frameon=False)
    _save(fig, path)
    return FigureResult("curves", dims, title, path, tuple(notes))


# -- anomaly-map gallery ---------------------------------------------------------------------------
def _by_model(cells) -> list[tuple[str, list[Cell]]]:
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.model_label, cell.key.model_params), []).append(cell)
    return [(label, sorted(members, key=lambda c: (c.scorer_label, c.key)))
            for (label, _), members in sorted(groups.items())]


def _load_gallery(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as npz:
        data = {k: npz[k] for k in ("image", "seg", "map")}
        modalities = [str(m) for m in npz["modalities"]] if "modalities" in npz.files else []
    n, _, h, w = data["image"].shape
    if data["seg"].shape != (n, h, w) or data["map"].shape != (n, h, w):
        raise ValueError(f"expected image (N, C, H, W), seg and map (N, H, W); got {data['image'].shape}, "
                         f"{data['seg'].shape}, {data['map'].shape}")
    data["modalities"] = modalities
    return data


def gallery_figure(cells: Sequence[Cell], model: str, dims: int, results_dir: Path, path: Path) -> FigureResult:
    """Rows: test slices; columns: input (FLAIR when present), ground truth, one map per scorer.

    All columns come from the same seed (the first with a readable gallery), so they show the
    same slices of the same test split.
    """
    title = f"Anomaly maps, {model}, {dims}D"
    notes: list[str] = []
    seeds = sorted({r.seed for c in cells for r in c.rows})
    reference, seed = None, None
    for s in seeds:
        for cell in cells:
            row = next((r for r in cell.rows if r.seed == s), None)
            if row is not None and row.artifact("gallery"):
                try:
                    reference, seed = _load_gallery(_artifact_path(row, "gallery", results_dir)), s
                    break
                except (OSError, ValueError, KeyError) as exc:
                    notes.append(f"{cell.label} seed {s}: unreadable gallery ({_why(exc)})")
        if reference is not None:
            break
    if reference is None:
        return FigureResult("gallery", dims, title, None,
                            ("skipped: no gallery artifact", *notes))
    columns = []
    for cell in cells:
        row = next((r for r in cell.rows if r.seed == seed), None)
        try:
            if row is None:
                raise ValueError(f"no done row for seed {seed}")
            data = _load_gallery(_artifact_path(row, "gallery", results_dir))
            if data["map"].shape != reference["map"].shape:
                raise ValueError(f"map shape {data['map'].shape} differs from {reference['map'].shape}")
            columns.append((cell, data["map"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            notes.append(f"{cell.label} seed {seed}: no map ({_why(exc)})")
    n = min(len(reference["image"]), MAX_GALLERY_SLICES)
    channel = next((i for i, m in enumerate(reference["modalities"]) if m.lower() in _FLAIR_NAMES), 0)
    channel_name = reference["modalities"][channel] if reference["modalities"] else f"channel {channel}"
    titles = [f"input ({channel_name})", "ground truth"] + [cell.scorer_label for cell, _ in columns]
    limits = [_limits(m[:n]) for _, m in columns]
    panels = []
    for i in range(n):
        image = reference["image"][i, channel]
        row = [_rgb(image, "gray", _limits(image)), _rgb(reference["seg"][i] > 0, "gray", (0.0, 1.0))]
        row += [_rgb(m[i], "inferno", lim) for (_, m), lim in zip(columns, limits)]
        panels.append(row)
    mosaic, centres = _mosaic(panels)
    # One image of all panels instead of a grid of axes: the same picture, drawn several times faster.
    width, height = 1.9 * len(titles), 1.9 * n + 0.6
    fig = _figure((width, height))
    ax = fig.add_axes((0.01, 0.01, 0.98, 1 - 0.62 / height))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for x, heading in zip(centres, titles):
        ax.text(x, -2, heading, ha="center", va="bottom", fontsize=8, clip_on=False)
    fig.suptitle(f"{model}, {dims}D, seed {seed} (each map column scaled to its 1st-99th percentile)",
                 fontsize=9, y=1 - 0.08 / height, va="top")
    _save(fig, path)
    return FigureResult("gallery", dims, title, path, tuple(notes))


def _rgb(array: np.ndarray, cmap: str, limits: tuple[float, float]) -> np.ndarray:
    """(H, W) -> (W, H, 3) colours, transposed and flipped so the first axis points up as in
    the radiological ``origin="lower"`` view of the (X, Y) slice."""
    from matplotlib import colormaps

    lo, hi = limits
    scaled = np.clip((np.nan_to_num(np.asarray(array, dtype=float), nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    return colormaps[cmap](scaled.T[::-1])[..., :3]


def _mosaic(panels: list[list[np.ndarray]]) -> tuple[np.ndarray, list[float]]:
    """Tile equal-sized RGB panels with white gaps; returns the image and the column centres."""
    h, w = panels[0][0].shape[:2]
    gap = max(1, max(h, w) // 24)
    rows, cols = len(panels), len(panels[0])
    out = np.ones((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3))
    for i, row in enumerate(panels):
        for j, tile in enumerate(row):
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = tile
    return out, [j * (w + gap) + (w - 1) / 2 for j in range(cols)]


def _limits(array: np.ndarray) -> tuple[float, float]:
    finite = np.asarray(array, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99])
    return (float(lo), float(hi)) if hi > lo else (float(lo) - 0.5, float(lo) + 0.5)


# -- training curves -------------------------------------------------------------------------------
def _read_history(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with path.open(encoding="utf-8", newline="") as fh:
        records = list(csv.DictReader(fh))
    if not records:
        raise ValueError("no epoch rows")
    columns = [k for k in records[0] if k.startswith("train_")]
    columns += ["val_loss"] if "val_loss" in records[0] else []

    def num(text: str | None) -> float:
        try:
            return float(text) if text not in (None, "") else math.nan
        except ValueError:
            return math.nan

    epochs = np.array([num(r.get("epoch")) for r in records])
    return epochs, {c: np.array([num(r.get(c)) for r in records]) for c in columns}


def training_figure(cells: Sequence[Cell], dims: int, results_dir: Path, path: Path) -> FigureResult:
    """One panel per trained model: every ``train_*`` column and ``val_loss`` per epoch; seeds
    by line style. The scorers of one model share its history, so each file is read once."""
    title = f"Training losses, {dims}D"
    notes: list[str] = []
    panels = []
    for model, members in _by_model(cells):
        histories: dict[str, tuple[int, Any]] = {}
        tried: set[str] = set()
        for row in sorted((r for c in members for r in c.rows + c.failed), key=lambda r: (r.seed, r.line)):
            rel = row.artifact("history")
            if rel is None or rel in tried or row.seed in {s for s, _ in histories.values()}:
                continue
            tried.add(rel)
            try:
                histories[rel] = (row.seed, _read_history(_artifact_path(row, "history", results_dir)))
            except (OSError, ValueError, KeyError) as exc:
                notes.append(f"{model} seed {row.seed}: history not plotted ({_why(exc)})")
        if histories:
            panels.append((model, sorted(histories.values(), key=lambda h: h[0])))
        elif not any(n.startswith(f"{model} ") for n in notes):
            notes.append(f"{model}: no training history (a training-free model, or none was recorded)")
    if not panels:
        return FigureResult("training", dims, title, None, ("skipped: no history.csv to plot", *notes))
    from matplotlib.ticker import MaxNLocator

    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    width, height = 4.6 * ncols, 3.5 * nrows
    fig = _figure((width, height))
    fig.subplots_adjust(left=0.6 / width, right=1 - 0.15 / width, top=1 - 0.55 / height,
                        bottom=0.5 / height, wspace=0.28, hspace=0.55)
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (model, series) in zip(axes, panels):
        names = sorted({c for _, (_, cols) in series for c in cols}, key=lambda c: (c == "val_loss", c))
        colours = dict(zip(names, _colours(len(names))))
        for k, (seed, (epochs, cols)) in enumerate(series):
            for name in names:
                if name in cols:
                    ax.plot(epochs, cols[name], color=colours[name], linestyle=_SEED_STYLES[k % len(_SEED_STYLES)],
                            linewidth=1.2, marker="." if len(epochs) < 30 else None,
                            label=name if k == 0 else None)
        styles = (f"seed {series[0][0]}" if len(series) == 1
                  else ", ".join(f"seed {s} {_style_name(k)}" for k, (s, _) in enumerate(series)))
        ax.set_title(f"{model}\n{styles}", fontsize=8)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss")
        ax.grid(True, linewidth=0.4, color="0.9")
        ax.legend(fontsize=7, frameon=False)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    _save(fig, path)
    return FigureResult("training", dims, title, path, tuple(notes))


def _style_name(k: int) -> str:
    return ("solid", "dashed", "dotted", "dash-dot")[k % len(_SEED_STYLES)]


# -- helpers ---------------------------------------------------------------------------------------
def _artifact_path(row: Row, name: str, results_dir: Path) -> Path:
    rel = row.artifact(name)
    if rel is None:
        raise KeyError(f"no {name!r} artifact in the row")
    path = Path(rel)
    return path if path.is_absolute() else results_dir / path


def _why(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"missing file {Path(exc.filename).name if exc.filename else ''}".strip()
    if isinstance(exc, KeyError):
        return str(exc.args[0]) if exc.args else "missing key"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI)  # fixed margins: a layout engine would double the drawing time
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    """PNG without a ``Software`` tag (matplotlib writes no date into PNGs), written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    write_bytes_atomic(path, buf.getvalue())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "model"


def _unique_name(name: str, used: set[str]) -> str:
    stem, suffix, k = name[:-4], name[-4:], 2
    while name in used:
        name, k = f"{stem}-{k}{suffix}", k + 1
    used.add(name)
    return name
