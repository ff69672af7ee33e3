"""``brats-ad leaderboard``: results.jsonl -> one markdown page (+ figures beside it).

The page is a pure function of the rows: stable ordering, fixed float formatting, and no
timestamp other than the rows' own ``created`` dates, so rebuilding it changes nothing. Its
protocol paragraph is written to be pasted into a paper.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from brats_ad.errors import ConfigError
from brats_ad.io import write_text_atomic
from brats_ad.report.aggregate import (
    BASELINE_MODEL,
    Cell,
    Row,
    best_values,
    better,
    build_cells,
    dig,
    distinct,
    metric_columns,
    metric_direction,
    metric_header,
    rank,
    read_rows,
)

DIGITS = 3
CONSTANT_MARK = "†"
DEFAULT_PRIMARY = "voxel_auprc_score"


def write_leaderboard(results: Path, out: Path | None = None, *, primary: str = DEFAULT_PRIMARY,
                      figures: bool = True) -> Path:
    """Write the leaderboard of ``results`` (a results.jsonl, or the bench folder holding one).

    ``out`` defaults to ``leaderboards/<bench folder name>.md``; figures go to
    ``<out stem>_figures/`` beside it. Returns the markdown path.
    """
    results = Path(results)
    if results.is_dir():
        results = results / "results.jsonl"
    out = Path(out) if out is not None else Path("leaderboards") / f"{results.resolve().parent.name}.md"
    rows = read_rows(results)
    metric_direction(primary)  # a name without a direction fails before any work
    cells = build_cells(rows)
    if any(r.done for r in rows) and not any(c.stat(primary).n for c in cells):
        known = ", ".join(metric_columns(rows)) or "none"
        raise ConfigError(f"no done cell has metric {primary!r}; pick one of: {known}")
    cells_by_dims = {d: rank([c for c in cells if c.dims == d and c.rows], primary)
                     for d in sorted({c.dims for c in cells})}
    figs = []
    if figures:
        from brats_ad.report.figures import render_all

        ranked = [c for d in cells_by_dims for c in cells_by_dims[d]]
        figs = render_all(ranked, results.parent, out.parent / f"{out.stem}_figures")
    text = render_markdown(rows, cells, cells_by_dims, primary=primary, title=out.stem,
                           source=_relpath(results, out.parent), figures=figs,
                           figure_dir=f"{out.stem}_figures", figures_requested=figures)
    write_text_atomic(out, text)
    return out


# -- the page --------------------------------------------------------------------------------------
def render_markdown(rows: Sequence[Row], cells: Sequence[Cell], cells_by_dims: dict[int, list[Cell]], *,
                    primary: str, title: str, source: str, figures: Sequence[Any] = (),
                    figure_dir: str = "", figures_requested: bool = True) -> str:
    metrics = metric_columns(rows)
    lines = [f"# brats-ad leaderboard: {title}", ""]
    lines += [protocol_paragraph(rows, primary), ""]
    for dims, ranked in cells_by_dims.items():
        lines += [f"## {dims}D", ""]
        if ranked:
            lines += dims_table(ranked, metrics, primary)
        else:
            lines += [f"No {dims}D cell finished; see [Failed cells](#failed-cells).", ""]
        for fig in figures:
            if fig.kind == "curves" and fig.dims == dims:
                lines += _figure_lines(fig, figure_dir)
    lines += summary_section(cells_by_dims, primary, failed_baselines={c.dims for c in cells if c.is_baseline})
    if figures_requested:
        galleries = [f for f in figures if f.kind == "gallery"]
        lines += ["## Anomaly maps", "",
                  "Test slices: input, ground truth, and the map of each scorer (one seed per model).", ""]
        for fig in (f for f in galleries if f.path is not None):
            lines += [f"### {fig.title.removeprefix('Anomaly maps, ')}", ""] + _figure_lines(fig, figure_dir)
        skipped = [f for f in galleries if f.path is None]
        if skipped:
            lines += ["Not drawn:", ""]
            lines += [f"- {f.title.removeprefix('Anomaly maps, ')}: {'; '.join(f.notes).removeprefix('skipped: ')}"
                      for f in skipped] + [""]
        lines += ["## Training curves", ""]
        for fig in (f for f in figures if f.kind == "training"):
            lines += _figure_lines(fig, figure_dir)
    lines += failed_section(cells)
    lines += parameters_section(cells)
    lines += provenance_section(rows, source)
    return "\n".join(lines).rstrip("\n") + "\n"


def fmt(value: float | None) -> str:
    if value is None:
        return "–"
    text = f"{value:.{DIGITS}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def fmt_stat(cell: Cell, metric: str) -> str:
    stat = cell.stat(metric)
    if stat.mean is None:
        return "–"
    return fmt(stat.mean) if stat.std is None else f"{fmt(stat.mean)} ± {fmt(stat.std)}"


def _arrow(metric: str) -> str:
    return "↑" if metric_direction(metric) > 0 else "↓"


def _md(text: Any) -> str:
    """Table-safe text: one line, pipes escaped."""
    return str(text).splitlines()[0].replace("|", "\\|") if str(text) else ""


def dims_table(ranked: Sequence[Cell], metrics: Sequence[str], primary: str) -> list[str]:
    header = ["Rank", "Model", "Scorer", "Seeds"] + [f"{metric_header(m)} {_arrow(m)}" for m in metrics]
    lines = [f"Ranked by {metric_header(primary)} ({'higher' if metric_direction(primary) > 0 else 'lower'} "
             "is better); mean ± sample std over seeds; best value per column in bold.", "",
             "| " + " | ".join(header) + " |",
             "|" + "|".join(["---:", ":---", ":---", "---:"] + ["---:"] * len(metrics)) + "|"]
    best = {m: best_values(ranked, m, DIGITS) for m in metrics}
    for i, cell in enumerate(ranked, start=1):
        seeds = str(len(cell.rows)) + (f" (+{len(cell.failed)} failed)" if cell.failed else "")
        values = []
        for m in metrics:
            text, mean = fmt_stat(cell, m), cell.stat(m).mean
            values.append(f"**{text}**" if mean is not None and round(mean, DIGITS) == best[m] else text)
        scorer = _md(cell.scorer_label) + (CONSTANT_MARK if cell.constant_map else "")
        lines.append("| " + " | ".join([str(i), _md(cell.model_label), scorer, seeds] + values) + " |")
    lines.append("")
    if any(c.constant_map for c in ranked):
        lines += [_constant_footnote(), ""]
    return lines


def _constant_footnote() -> str:
    return (f"{CONSTANT_MARK} The anomaly map is constant per sample (a latent or feature distance "
            "broadcast over the slice or patch): its voxel-level metrics measure which samples are "
            "flagged, not where the tumour is.")


def _figure_lines(fig: Any, figure_dir: str) -> list[str]:
    lines = []
    if fig.path is not None:
        lines += [f"![{fig.title}]({figure_dir}/{fig.path.name})", ""]
    for note in fig.notes:
        lines.append(f"- {fig.title}: {note}")
    return lines + ([""] if fig.notes else [])


# -- protocol --------------------------------------------------------------------------------------
def _one(values: Sequence[Any], render=str, missing: str = "not recorded") -> str:
    if not values:
        return missing
    shown = [render(v) for v in values]
    return shown[0] if len(shown) == 1 else " / ".join(shown) + " (differs between cells)"


def _postprocess_text(spec: Any) -> str:
    if not isinstance(spec, dict) or not spec:
        return "none"
    return ", ".join(f"{k} = {v}" for k, v in sorted(spec.items()))


def protocol_paragraph(rows: Sequence[Row], primary: str) -> str:
    done = [r for r in rows if r.done] or list(rows)
    dataset = _one(distinct(done, dig("dataset", "name")), lambda v: f"`{v}`")
    modalities = _one(distinct(done, dig("dataset", "modalities")), lambda v: ", ".join(map(str, v)))
    pipeline = _one(distinct(done, dig("dataset", "pipeline_hash")), lambda v: f"`{v}`")
    split = _one(distinct(done, dig("dataset", "split_hash")), lambda v: f"`{v}`")
    sizes = _one(distinct(done, dig("n_cases")),
                 lambda v: f"{v.get('train', '?')} training / {v.get('val', '?')} validation / "
                           f"{v.get('test', '?')} test patients")
    training = _one(distinct(done, dig("protocol", "training")), lambda v: {
        "tumour-free": "tumour-free slices (2D) or patches (3D) of the training patients",
        "healthy-controls": "scans of healthy controls"}.get(v, str(v)))
    quantile = _one(distinct(done, dig("protocol", "healthy_quantile")), lambda v: f"{v:g}")
    protocols = distinct(done, dig("protocol", "threshold_protocols"))
    units = {"slice": "an axial slice (2D)", "patch": "a sliding-window patch (3D)", "volume": "a volume"}
    order = list(units)
    levels = sorted(distinct(done, dig("protocol", "sample_level")),
                    key=lambda v: (order.index(v) if v in order else len(order), str(v)))
    sample = (" or ".join(units.get(v, str(v)) for v in levels) + " is positive when it contains any tumour voxel"
              if levels else "not recorded")
    post = _one(distinct(done, dig("protocol", "postprocess")), _postprocess_text)
    skipped = [int(v) for v in distinct(done, dig("n_skipped_dice"))]
    left_out = ("none" if skipped in ([], [0]) else f"{skipped[0]} per cell" if len(skipped) == 1
                else f"{min(skipped)}–{max(skipped)} per cell, see n_skipped_dice in the results")
    skipped_text = ("it is averaged over the test volumes that contain tumour (tumour-free volumes count in "
                    f"AUROC, AUPRC and at the sample level, not in Dice; left out: {left_out})")
    components = [int(v) for v in distinct(done, dig("protocol", "min_component_size")) if v]
    if components:
        skipped_text += (f"; before Dice, predicted components smaller than {_one(components, str)} voxels are "
                         "removed (⌈Dice⌉ and the curves use the maps as they are)")
    thresholds = []
    flat = {p for v in protocols for p in (v if isinstance(v, list) else [v])}
    if "valbest" in flat or not flat:
        thresholds.append("*val-best*, the threshold that maximises Dice on the validation patients")
    if "healthyq" in flat or not flat:
        thresholds.append(f"*healthy-q*, the q = {quantile} quantile of the anomaly scores of healthy "
                          "validation voxels")
    direction = "higher" if metric_direction(primary) > 0 else "lower"
    return (
        f"**Protocol.** Dataset {dataset} (modalities {modalities}), preprocessed with pipeline {pipeline}. "
        f"Patients are split at random with a fixed seed (split {split}): {sizes}; no patient is in two splits. "
        f"Models are trained without labels on {training}. The anomaly is the whole tumour (label > 0). "
        "Voxel-level AUROC and AUPRC are computed over the brain voxels of the test volumes. "
        f"Dice is computed per test volume at a threshold chosen without test labels: "
        f"{'; '.join(thresholds)}; {skipped_text}. "
        "⌈Dice⌉ (oracle) is the best Dice over all thresholds on the test set itself, as reported in "
        "the literature: it uses test labels and is an upper bound, not a fair comparison. "
        f"Sample level: {sample}; AUROC and AUPRC of the sample scores. "
        f"Anomaly maps are post-processed with: {post}. "
        "Values are mean ± sample standard deviation (ddof = 1) over seeds (the Seeds column gives "
        f"their number); cells are ranked by {metric_header(primary)} ({direction} is better)."
    )


# -- summary, failures, parameters, provenance -----------------------------------------------------
def summary_section(cells_by_dims: dict[int, list[Cell]], primary: str, *,
                    failed_baselines: Iterable[int] = ()) -> list[str]:
    name = metric_header(primary)
    lines = ["## Summary", "", f"Best cell per model across scorers and dims, by {name}.", "",
             f"| Model | Best cell | {name} {_arrow(primary)} |", "|:---|:---|---:|"]
    best: dict[str, Cell] = {}
    for ranked in cells_by_dims.values():
        for cell in ranked:
            mean = cell.stat(primary).mean
            current = best.get(cell.model_label)
            if mean is not None and (current is None or better(mean, current.stat(primary).mean, primary)):
                best[cell.model_label] = cell
    order = sorted(best.values(), key=lambda c: (-metric_direction(primary) * c.stat(primary).mean, c.model_label))
    if not order:
        return lines[:3] + ["No cell finished; see [Failed cells](#failed-cells).", ""]
    for cell in order:
        mark = CONSTANT_MARK if cell.constant_map else ""
        lines.append(f"| {_md(cell.model_label)} | {_md(cell.scorer_label)}{mark}, {cell.dims}D | "
                     f"{fmt_stat(cell, primary)} |")
    lines.append("")
    if any(c.constant_map for c in order):
        lines += [_constant_footnote(), ""]
    lines += baseline_lines(cells_by_dims, primary, baseline_dims=failed_baselines)
    return lines


def baseline_lines(cells_by_dims: dict[int, list[Cell]], primary: str, *,
                   baseline_dims: Iterable[int] = ()) -> list[str]:
    """Per dims: which learned cells beat the FLAIR-threshold baseline on the primary metric.

    ``baseline_dims``: dims where the matrix has a baseline cell at all (finished or not), so a
    failed baseline is not reported as a missing one.
    """
    baseline_dims = set(baseline_dims)
    name = metric_header(primary)
    lines = [f"**Against the FLAIR-threshold baseline** (`{BASELINE_MODEL}`, {name}, mean over seeds):", ""]
    any_baseline = False
    for dims, ranked in cells_by_dims.items():
        scored = [c for c in ranked if c.stat(primary).mean is not None]
        baselines = [c for c in scored if c.is_baseline]
        learned = [c for c in scored if not c.is_baseline]
        if not baselines:
            lines.append(f"- {dims}D: the FLAIR-threshold cell did not finish (see Failed cells)."
                         if dims in baseline_dims else
                         f"- {dims}D: no FLAIR-threshold cell; add model `{BASELINE_MODEL}` to the matrix to compare.")
            continue
        any_baseline = True
        base = baselines[0]  # ranked: the best baseline cell
        ref = base.stat(primary).mean
        winners = [c for c in learned if better(c.stat(primary).mean, ref, primary)]
        head = f"- {dims}D: the baseline ({_md(base.label)}) reaches {fmt_stat(base, primary)}. "
        if winners:
            listed = "; ".join(f"{_md(c.label)} ({fmt_stat(c, primary)}, {_delta(c.stat(primary).mean - ref)})"
                               for c in winners)
            lines.append(head + f"Learned cells that beat it: {listed}.")
        elif learned:
            top = learned[0]
            lines.append(head + f"No learned {dims}D cell beats it; the best, {_md(top.label)}, reaches "
                                f"{fmt_stat(top, primary)} ({_delta(top.stat(primary).mean - ref)}).")
        else:
            lines.append(head + f"No learned {dims}D cell finished.")
    if not any_baseline:
        lines[0] = f"**Against the FLAIR-threshold baseline** (`{BASELINE_MODEL}`): not in these results."
    return lines + [""]


def _delta(value: float) -> str:
    return ("+" if value >= 0 else "−") + fmt(abs(value))


def failed_section(cells: Sequence[Cell]) -> list[str]:
    failed = sorted(((c, r) for c in cells for r in c.failed), key=lambda cr: (cr[0].key, cr[1].seed))
    lines = ["## Failed cells", ""]
    if not failed:
        return lines + ["None.", ""]
    lines += ["| Dims | Model | Scorer | Seed | results.jsonl line | Error |", "|---:|:---|:---|---:|---:|:---|"]
    for cell, row in failed:
        error = row.get("error") or "no error message recorded"
        lines.append(f"| {cell.dims}D | {_md(cell.model_label)} | {_md(cell.scorer_label)} | {row.seed} | "
                     f"{row.line} | {_md(error)} |")
    return lines + [""]


def parameters_section(cells: Sequence[Cell]) -> list[str]:
    """Full model and scorer parameters, so every table label maps to an exact configuration."""
    lines = ["## Parameters", ""]
    dims: dict[tuple[str, str, str], set[int]] = {}
    for cell in cells:
        dims.setdefault(("model", cell.model_label, cell.key.model_params), set()).add(cell.dims)
        dims.setdefault(("scorer", cell.scorer_label, cell.key.scorer_params), set()).add(cell.dims)
    for (kind, label, params), used in sorted(dims.items()):
        where = ", ".join(f"{d}D" for d in sorted(used))
        lines.append(f"- {kind} `{label}` ({where}): `{params}`")
    return lines + [""]


def provenance_section(rows: Sequence[Row], source: str) -> list[str]:
    def listing(values: Iterable[Any]) -> str:
        shown = [f"`{v}`" for v in values]
        return ", ".join(shown) if shown else "not recorded"

    plugins = sorted({f"{dist} {ver}" for r in rows for dist, ver in
                      ((r.get("versions") or {}).get("plugins") or {}).items()})
    created = sorted(str(v) for v in distinct(rows, dig("created")))
    return [
        "## Provenance",
        "",
        f"- Results: `{source}` ({len(rows)} rows)",
        f"- brats_ad: {listing(distinct(rows, dig('versions', 'brats_ad')))}",
        f"- torch: {listing(distinct(rows, dig('versions', 'torch')))}",
        f"- MONAI: {listing(distinct(rows, dig('versions', 'monai')))}",
        f"- Python: {listing(distinct(rows, dig('versions', 'python')))}",
        f"- Devices: {listing(distinct(rows, dig('device')))}",
        f"- Git revisions: {listing(distinct(rows, dig('git_revision')))}",
        f"- Runs: {listing(distinct(rows, dig('run_id')))}",
        f"- Plugins: {listing(plugins) if plugins else 'none'}",
        f"- Created: {listing(created) if len(created) < 2 else listing(created[:1]) + ' – ' + listing(created[-1:])}",
        "",
    ]


# -- files -----------------------------------------------------------------------------------------
def _relpath(path: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return path.resolve().as_posix()
