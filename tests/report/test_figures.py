"""Figures beside the leaderboard: created, byte-deterministic, and skipped (with a note) when
an artifact is missing or broken."""

from __future__ import annotations

import json
from pathlib import Path

from brats_ad.report.aggregate import build_cells, rank, read_rows
from brats_ad.report.figures import render_all

EXPECTED = ["gallery_2d_ae.png", "gallery_2d_flair-threshold.png", "gallery_2d_ganomaly.png",
            "roc_pr_2d.png", "roc_pr_3d.png", "training_2d.png", "training_3d.png"]


def _ranked(results: Path):
    cells = build_cells(read_rows(results))
    return [c for d in (2, 3) for c in rank([c for c in cells if c.dims == d and c.rows], "voxel_auprc_score")]


def test_figures_are_created_beside_the_markdown(rendered):
    _, out = rendered
    fig_dir = out.parent / "demo_figures"
    assert sorted(p.name for p in fig_dir.iterdir()) == EXPECTED
    for path in fig_dir.iterdir():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"Software" not in path.read_bytes()[:4096]


def test_two_renders_are_byte_identical(rendered, tmp_path):
    results, out = rendered
    figures = render_all(_ranked(results), results.parent, tmp_path / "again")
    assert sorted(f.path.name for f in figures if f.path is not None) == EXPECTED
    for name in EXPECTED:
        assert (tmp_path / "again" / name).read_bytes() == (out.parent / "demo_figures" / name).read_bytes(), name


def test_missing_artifacts_skip_with_a_note(rendered):
    results, _ = rendered
    # (the fixture's 3D cells lack galleries, most curves and some histories)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        figures = {(f.kind, f.dims, f.title): f for f in render_all(_ranked(results), results.parent, Path(tmp))}
    gallery3 = figures[("gallery", 3, "Anomaly maps, ae, 3D")]
    assert gallery3.path is None and gallery3.notes == ("skipped: no gallery artifact",)
    curves3 = figures[("curves", 3, "ROC and PR curves, 3D")]
    assert curves3.path is not None
    assert "ganomaly + latent: no curves for seed 0 (missing file curves.json), seed 1 (missing file curves.json)" \
        in curves3.notes
    training2 = figures[("training", 2, "Training losses, 2D")]
    assert training2.notes == ("flair-threshold: no training history (a training-free model, or none was recorded)",)


def test_broken_artifacts_never_crash(bench, tmp_path):
    folder = bench.parent
    for path in folder.rglob("curves.json"):
        path.write_text("{not json")
    for path in folder.rglob("gallery.npz"):
        path.write_bytes(b"garbage")
    for path in folder.rglob("history.csv"):
        path.write_text("")
    figures = render_all(_ranked(bench), folder, tmp_path / "figs")
    assert all(f.path is None for f in figures)
    assert all(f.notes and f.notes[0].startswith("skipped:") for f in figures)
    assert not list((tmp_path / "figs").glob("*.png"))
    curves2 = next(f for f in figures if f.kind == "curves" and f.dims == 2)
    assert any("JSONDecodeError" in n for n in curves2.notes)


def test_stale_figures_are_removed(bench, tmp_path):
    fig_dir = tmp_path / "figs"
    fig_dir.mkdir()
    (fig_dir / "gallery_2d_old-model.png").write_bytes(b"old")
    (fig_dir / "notes.txt").write_text("kept")
    rows = [json.loads(ln) for ln in bench.read_text().splitlines()]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows if r["dims"] == 2 and r["model"] == "ae"))
    figures = render_all(_ranked(bench), bench.parent, fig_dir)
    assert sorted(p.name for p in fig_dir.iterdir()) == ["gallery_2d_ae.png", "notes.txt", "roc_pr_2d.png",
                                                         "training_2d.png"]
    assert len(figures) == 3
