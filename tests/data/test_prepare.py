"""prepare: resumable, atomic per case, stale-aware, bad cases stopped or recorded, parallel."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from brats_ad.data.brats import BratsDataset
from brats_ad.data.cache import CachedCase, cache_index
from brats_ad.data.prepare import FAILURES_FILE, prepare_dataset, prepare_from_cli
from brats_ad.errors import DataError
from brats_ad.preprocess.pipeline import build_pipeline

try:
    from ._data_factories import brats_file_name, write_brats_case, write_nifti
except ImportError:
    from _data_factories import brats_file_name, write_brats_case, write_nifti

SHAPE = (20, 20, 12)
STEPS = [{"name": "orient"}, {"name": "percentile-scale"}, {"name": "crop-pad", "shape": [16, 16, 12]}]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for i in range(4):
        write_brats_case(root, f"BraTS2021_{i:05d}", naming="2021", shape=SHAPE, rng=i)
    return root


@pytest.fixture
def pipeline():
    return build_pipeline(STEPS)


def cases(root: Path):
    return BratsDataset(root).cases()


def run(cases_, pipeline, cache, **kw):
    return prepare_dataset(cases_, pipeline, cache, progress=False, **kw)


def no_temp_dirs(cache_dir: Path) -> bool:
    return not [p for p in cache_dir.iterdir() if p.name.startswith(".")]


class KilledAt:
    """The real pipeline, except that it 'dies' on one case (like a kill mid-run)."""

    def __init__(self, pipeline, case_id: str) -> None:
        self.pipeline, self.case_id = pipeline, case_id

    def __call__(self, scan):
        if scan.case_id == self.case_id:
            raise KeyboardInterrupt
        return self.pipeline(scan)

    def to_config(self):
        return self.pipeline.to_config()

    def config_hash(self):
        return self.pipeline.config_hash()


def test_prepare_then_resume(root: Path, tmp_path: Path, pipeline) -> None:
    summary = run(cases(root), pipeline, tmp_path / "cache")
    assert (summary.prepared, summary.skipped, summary.failed) == (4, 0, [])
    assert summary.cache_dir == tmp_path / "cache" / pipeline.config_hash()
    assert cache_index(summary.cache_dir) == [c.case_id for c in cases(root)]
    case = CachedCase.open(summary.cache_dir, "BraTS2021_00000")
    assert case.modalities == ("t1", "t1ce", "t2", "flair") and case.spatial_shape == (16, 16, 12)
    assert case.meta["source"]["images"]["flair"]["name"] == "BraTS2021_00000_flair.nii.gz"
    assert case.tumour_voxels_per_slice.sum() > 0 and case.meta["dataset"] == "brats"
    pipe_json = json.loads((summary.cache_dir / "pipeline.json").read_text())
    assert pipe_json["pipeline"] == pipeline.to_config()
    again = run(cases(root), pipeline, tmp_path / "cache")
    assert (again.prepared, again.skipped) == (0, 4)


def test_interrupted_run_resumes_with_the_rest(root: Path, tmp_path: Path, pipeline) -> None:
    with pytest.raises(KeyboardInterrupt):
        run(cases(root), KilledAt(pipeline, "BraTS2021_00002"), tmp_path / "cache")
    cache_dir = tmp_path / "cache" / pipeline.config_hash()
    assert cache_index(cache_dir) == ["BraTS2021_00000", "BraTS2021_00001"]
    assert no_temp_dirs(cache_dir)
    summary = run(cases(root), pipeline, tmp_path / "cache")
    assert (summary.prepared, summary.skipped) == (2, 2)


def test_changed_source_file_is_prepared_again(root: Path, tmp_path: Path, pipeline) -> None:
    run(cases(root), pipeline, tmp_path / "cache")
    flair = root / "BraTS2021_00001" / "BraTS2021_00001_flair.nii.gz"
    st = flair.stat()
    os.utime(flair, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    summary = run(cases(root), pipeline, tmp_path / "cache")
    assert (summary.prepared, summary.skipped) == (1, 3)
    only_flair = run(cases(root), pipeline, tmp_path / "cache", modalities=["t2f"])
    assert only_flair.prepared == 4
    assert CachedCase.open(only_flair.cache_dir, "BraTS2021_00003").modalities == ("flair",)


def break_cases(root: Path) -> dict[str, str]:
    """One case per kind of failure; returns case id -> what the message must mention."""
    write_brats_case(root, "BraTS2021_00010", naming="2021", shape=SHAPE, rng=10)
    (root / "BraTS2021_00010" / "BraTS2021_00010_t2.nii.gz").write_bytes(b"not a nifti")  # corrupt
    write_brats_case(root, "BraTS2021_00011", naming="2021", shape=SHAPE, rng=11)
    gz = root / "BraTS2021_00011" / "BraTS2021_00011_t1.nii.gz"
    gz.write_bytes(gz.read_bytes()[:200])  # truncated download
    write_brats_case(root, "BraTS2021_00012", naming="2021", shape=SHAPE, rng=12)
    write_nifti(root / "BraTS2021_00012" / brats_file_name("BraTS2021_00012", "2021", "t1ce"),
                np.ones((10, 10, 10), np.int16))  # grid mismatch
    write_brats_case(root, "BraTS2021_00013", naming="2021", shape=SHAPE, rng=13)
    write_nifti(root / "BraTS2021_00013" / brats_file_name("BraTS2021_00013", "2021", "seg"),
                np.full(SHAPE, 7, np.uint8))  # foreign labels
    return {"BraTS2021_00010": "t2", "BraTS2021_00011": "t1", "BraTS2021_00012": "t1ce",
            "BraTS2021_00013": "seg"}


def test_skip_bad_records_each_failure(root: Path, tmp_path: Path, pipeline) -> None:
    expected = break_cases(root)
    found = cases(root)
    missing = root / "BraTS2021_00003" / "BraTS2021_00003_flair.nii.gz"
    missing.unlink()  # vanished after discovery
    expected["BraTS2021_00003"] = "flair"
    summary = run(found, pipeline, tmp_path / "cache", skip_bad=True)
    assert summary.prepared == 3 and summary.skipped == 0
    failed = dict(summary.failed)
    assert set(failed) == set(expected)
    for case_id, needle in expected.items():
        assert case_id in failed[case_id] and needle in failed[case_id]
    record = json.loads((summary.cache_dir / FAILURES_FILE).read_text())
    assert {r["case_id"] for r in record["failed"]} == set(expected)
    assert cache_index(summary.cache_dir) == ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002"]
    assert no_temp_dirs(summary.cache_dir)


@pytest.mark.parametrize("workers", [1, 2])
def test_without_skip_bad_the_first_bad_case_stops_the_run(root: Path, tmp_path: Path, pipeline, workers: int) -> None:
    write_brats_case(root, "BraTS2021_00002", naming="2021", shape=SHAPE, rng=2)
    gz = root / "BraTS2021_00002" / "BraTS2021_00002_t2.nii.gz"
    gz.write_bytes(gzip.compress(b"\0" * 100))  # decodes, but is not a NIfTI
    with pytest.raises(DataError, match="BraTS2021_00002.*t2.*--skip-bad"):
        run(cases(root), pipeline, tmp_path / "cache", workers=workers)
    cache_dir = tmp_path / "cache" / pipeline.config_hash()
    done = cache_index(cache_dir)
    if workers == 1:
        assert done == ["BraTS2021_00000", "BraTS2021_00001"]
    assert "BraTS2021_00002" not in done  # in parallel, cases running beside it may finish
    assert sorted(p.name for p in cache_dir.iterdir()) == done + ["pipeline.json"]
    for cid in done:
        assert CachedCase.open(cache_dir, cid).slice(5).shape == (4, 16, 16)


def test_missing_file_stops_before_any_write(root: Path, tmp_path: Path, pipeline) -> None:
    found = cases(root)
    (root / "BraTS2021_00003" / "BraTS2021_00003_seg.nii.gz").unlink()
    with pytest.raises(DataError, match="BraTS2021_00003: cannot read .*seg"):
        run(found, pipeline, tmp_path / "cache")
    assert cache_index(tmp_path / "cache" / pipeline.config_hash()) == []


def test_two_workers_write_the_same_cache(root: Path, tmp_path: Path, pipeline) -> None:
    one = run(cases(root), pipeline, tmp_path / "one", workers=1)
    two = run(cases(root), pipeline, tmp_path / "two", workers=2)
    assert two.prepared == 4
    for cid in cache_index(one.cache_dir):
        a, b = one.cache_dir / cid, two.cache_dir / cid
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        for f in a.iterdir():
            assert f.read_bytes() == (b / f.name).read_bytes(), f"{cid}/{f.name} differs"


def test_prepare_from_cli_with_toml_pipeline(root: Path, tmp_path: Path) -> None:
    toml = tmp_path / "pipe.toml"
    toml.write_text(
        '[[steps]]\nname = "orient"\n[[steps]]\nname = "percentile-scale"\n'
        '[[steps]]\nname = "crop-pad"\nshape = [16, 16, 12]\n'
    )
    console = Console(file=open(os.devnull, "w"), width=120)
    code = prepare_from_cli(data=root, dataset="brats", modalities=["t2f"], pipeline=str(toml),
                            cache=tmp_path / "cache", workers=1, skip_bad=False, console=console)
    assert code == 0
    (cache_dir,) = (tmp_path / "cache").iterdir()
    assert cache_index(cache_dir) == [c.case_id for c in cases(root)]
    assert CachedCase.open(cache_dir, "BraTS2021_00000").modalities == ("flair",)
    with pytest.raises(DataError, match="does not exist"):
        prepare_from_cli(data=tmp_path / "nope", dataset="brats", modalities=None, pipeline=None,
                         cache=tmp_path / "cache", workers=1, skip_bad=False, console=console)


def test_summary_table_is_printed(root: Path, tmp_path: Path, pipeline) -> None:
    console = Console(record=True, width=150)
    break_cases(root)
    prepare_dataset(cases(root), pipeline, tmp_path / "cache", skip_bad=True, console=console)
    text = console.export_text()
    assert "prepared" in text and "failed" in text and "BraTS2021_00012" in text


def test_cache_prepare_splits_do_not_import_torch() -> None:
    code = ("import sys, brats_ad.data.cache, brats_ad.data.prepare, brats_ad.data.splits; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2]).returncode == 0
