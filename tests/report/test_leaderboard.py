"""The leaderboard page: golden markdown, bold and ranking, baseline verdict, errors, no torch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from brats_ad.errors import ConfigError, DataError
from brats_ad.report import write_leaderboard

GOLDEN = Path(__file__).resolve().parent / "golden" / "leaderboard.md"
UPDATE = os.environ.get("BRATS_AD_UPDATE_GOLDEN") == "1"


def _table(text: str, heading: str) -> list[list[str]]:
    """The body rows of the first table under ``## heading``, as cell lists."""
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def test_golden_markdown(rendered):
    """Regenerate with BRATS_AD_UPDATE_GOLDEN=1 after an intended change, and review the diff."""
    _, out = rendered
    text = out.read_text(encoding="utf-8")
    if UPDATE:
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


def test_rebuilding_changes_nothing_and_leaves_no_temp_files(rendered, tmp_path):
    results, out = rendered
    again = write_leaderboard(results, tmp_path / "demo.md", figures=False)
    first = out.read_text(encoding="utf-8")
    second = again.read_text(encoding="utf-8")
    assert write_leaderboard(results, tmp_path / "demo.md", figures=False).read_text(encoding="utf-8") == second
    assert [p.name for p in tmp_path.iterdir()] == ["demo.md"]
    assert not list(out.parent.glob(".*.tmp"))
    assert "demo_figures" not in second and "demo_figures/" in first
    strip = lambda t: t.split("## Summary")[0].replace("![", "").split("\n")  # noqa: E731
    tables = [ln for ln in strip(first) if ln.startswith("|")]
    assert tables == [ln for ln in strip(second) if ln.startswith("|")]


def test_ranked_by_primary_with_mean_std_and_seed_counts(rendered):
    text = rendered[1].read_text(encoding="utf-8")
    rows2 = _table(text, "2D")
    assert [r[1:3] for r in rows2] == [["ganomaly", "residual"], ["flair-threshold", "model-map"],
                                       ["ae", "residual"], ["ganomaly", "latent†"]]
    assert rows2[0][5] == "**0.450 ± 0.014**"  # voxel AUPRC: 0.44, 0.46 -> mean 0.45, sample std 0.0141
    rows3 = _table(text, "3D")
    gan = next(r for r in rows3 if r[1:3] == ["ganomaly", "residual"])
    assert gan[3] == "1 (+1 failed)" and gan[5] == "0.320"  # one seed: no ± part


def test_best_value_per_column_is_bold(rendered):
    text = rendered[1].read_text(encoding="utf-8")
    header = next(ln for ln in text.splitlines() if ln.startswith("| Rank"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    for heading in ("2D", "3D"):
        rows = _table(text, heading)
        for j in range(4, len(columns)):
            values = [float(r[j].strip("*").split(" ")[0]) for r in rows]
            bold = [r[j].startswith("**") for r in rows]
            assert bold == [v == max(values) for v in values], (heading, columns[j])
    rows2 = _table(text, "2D")
    healthy = columns.index("Dice (healthy-q) ↑")
    assert [r[1] for r in rows2 if r[healthy].startswith("**")] == ["flair-threshold"]


def test_protocol_paragraph_states_the_evaluation(rendered):
    text = rendered[1].read_text(encoding="utf-8")
    protocol = next(ln for ln in text.splitlines() if ln.startswith("**Protocol.**"))
    for needle in ("`synthetic`", "t1, t1ce, t2, flair", "`9a1b2c3d`", "`5e6f7a8b`",
                   "40 training / 10 validation / 20 test patients", "tumour-free slices",
                   "maximises Dice on the validation", "q = 0.99 quantile", "⌈Dice⌉ (oracle)",
                   "an axial slice (2D) is positive when it contains any tumour voxel",
                   "erode_brain = 0, fill = min, median_size = 0", "0–1 per cell", "ranked by Voxel AUPRC"):
        assert needle in protocol, needle
    assert "⌈Dice⌉ (oracle) ↑" in text.split("## 2D", 1)[1]


def test_protocol_states_component_removal_only_when_used(bench, tmp_path):
    plain = write_leaderboard(bench, tmp_path / "plain.md", figures=False).read_text()
    assert "components smaller than" not in plain
    rows = [json.loads(ln) for ln in bench.read_text().splitlines()]
    for row in rows:
        row.setdefault("protocol", {})["min_component_size"] = 20
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = write_leaderboard(bench, tmp_path / "cc.md", figures=False).read_text()
    assert "predicted components smaller than 20 voxels are removed" in text


def test_summary_says_which_learned_cells_beat_the_threshold_baseline(rendered):
    text = rendered[1].read_text(encoding="utf-8")
    summary = text.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert [r[0] for r in _table(text, "Summary")] == ["ganomaly", "flair-threshold", "ae"]
    assert ("- 2D: the baseline (flair-threshold + model-map) reaches 0.400 ± 0.014. Learned cells that "
            "beat it: ganomaly + residual (0.450 ± 0.014, +0.050).") in summary
    assert "- 3D: the baseline (flair-threshold + model-map) reaches 0.380 ± 0.014. No learned 3D cell " \
           "beats it; the best, ae + residual, reaches 0.350 ± 0.014 (−0.030)." in summary


def test_failed_cells_constant_maps_and_provenance(rendered):
    text = rendered[1].read_text(encoding="utf-8")
    (failed,) = _table(text, "Failed cells")
    assert failed[:5] == ["3D", "ganomaly", "residual", "1", "13"]
    assert failed[5].startswith("TrainingDiverged: training diverged")
    assert text.count("† The anomaly map is constant per sample") == 2
    provenance = text.split("## Provenance", 1)[1]
    for needle in ("`../runs/demo/results.jsonl` (16 rows)", "`0.1.0`", "`2.13.0`", "`cuda:0 (NVIDIA H200)`",
                   "`8b2b067`", "`run-a`, `run-b`", "`brats-ad-ssim 0.1.0`",
                   "`2025-06-01T12:00:00+00:00` – `2025-06-02T12:00:00+00:00`"):
        assert needle in provenance, needle


def test_lower_is_better_primary_reverses_the_ranking(bench, tmp_path):
    rows = [json.loads(ln) for ln in bench.read_text().splitlines()]
    for row in rows:
        if row["status"] == "done":
            row["metrics"]["recon_error"] = row["metrics"]["voxel_auprc_score"]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = write_leaderboard(bench, tmp_path / "err.md", primary="recon_error", figures=False).read_text()
    rows2 = _table(text, "2D")
    assert [r[1:3] for r in rows2] == [["ganomaly", "latent†"], ["ae", "residual"],
                                       ["flair-threshold", "model-map"], ["ganomaly", "residual"]]
    assert "Ranked by recon_error (lower is better)" in text
    column = [c.strip() for c in next(ln for ln in text.splitlines() if ln.startswith("| Rank")).strip("|").split("|")]
    j = column.index("recon_error ↓")
    assert [r[j].startswith("**") for r in rows2] == [True, False, False, False]
    assert "Learned cells that beat it: ganomaly + latent" in text


def test_default_out_and_folder_argument(bench, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = write_leaderboard(bench.parent, figures=False)
    assert out == Path("leaderboards") / "demo.md" and out.is_file()
    assert not (tmp_path / "leaderboards" / "demo_figures").exists()


def test_malformed_row_fails_with_its_line_number(bench, tmp_path):
    with bench.open("a") as fh:
        fh.write('{"status": "done", "model": "ae", "scor\n')
    with pytest.raises(DataError, match=r"results\.jsonl:17: not valid JSON"):
        write_leaderboard(bench, tmp_path / "x.md", figures=False)
    assert not (tmp_path / "x.md").exists()


def test_unknown_or_undirected_primary_is_a_config_error(bench, tmp_path):
    with pytest.raises(ConfigError, match="no done cell has metric 'nope_score'; pick one of: voxel_auroc_score"):
        write_leaderboard(bench, tmp_path / "x.md", primary="nope_score", figures=False)
    with pytest.raises(ConfigError, match="carries no direction"):
        write_leaderboard(bench, tmp_path / "x.md", primary="dice_valbest_std", figures=False)


def test_leaderboard_never_imports_torch(bench, tmp_path):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from brats_ad.report import write_leaderboard\n"
        f"write_leaderboard(Path({str(bench)!r}), Path({str(tmp_path / 'lb.md')!r}))\n"
        "heavy = sorted(m for m in ('torch', 'monai', 'pandas', 'sklearn') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout
    assert (tmp_path / "lb_figures" / "roc_pr_2d.png").is_file()


def test_markdown_links_are_relative_and_exist(rendered):
    _, out = rendered
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", out.read_text(encoding="utf-8"))
    assert links and all(not Path(link).is_absolute() and (out.parent / link).is_file() for link in links)


def test_a_bench_where_every_cell_failed_still_gets_a_page(bench, tmp_path):
    rows = [json.loads(ln) for ln in bench.read_text().splitlines()]
    for row in rows:
        row.update(status="failed", error="CUDA out of memory; lower batch_size", metrics={})
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = write_leaderboard(bench, tmp_path / "x.md").read_text()
    assert "No 2D cell finished; see [Failed cells](#failed-cells)." in text
    assert len(_table(text, "Failed cells")) == 16
    assert "No cell finished; see [Failed cells](#failed-cells)." in text


def test_an_empty_results_file_is_a_data_error(tmp_path):
    (tmp_path / "results.jsonl").write_text("\n")
    with pytest.raises(DataError, match="holds no results row"):
        write_leaderboard(tmp_path / "results.jsonl", tmp_path / "x.md")
