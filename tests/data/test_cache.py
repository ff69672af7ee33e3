"""The cache: round trip, slice-major layout, atomic writes, completeness and stale detection."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from brats_ad.data import cache as cache_mod
from brats_ad.data.cache import (
    CachedCase,
    cache_index,
    clean_temp_dirs,
    is_cached,
    open_cache,
    source_fingerprint,
    write_cached_case,
)
from brats_ad.data.scan import Case, Scan
from brats_ad.errors import DataError

CONFIG = [{"name": "test-step", "factor": 1}]


def make_scan(case_id: str = "case-a", shape=(10, 8, 6), channels: int = 2, tumour: bool = True) -> Scan:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(channels, *shape)).astype(np.float32)
    mask = np.zeros(shape, bool)
    mask[1:-1, 1:-1, 1:-1] = True
    seg = None
    if tumour:
        seg = np.zeros(shape, np.uint8)
        seg[3:5, 3:5, 2:4] = 2
        seg[4, 4, 3] = 4
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    affine[:3, 3] = [-5, -4, -3]
    return Scan(case_id, image, ("t1", "flair")[:channels], affine, seg=seg, brain_mask=mask,
                meta={"original_shape": [12, 10, 8], "steps": [{"name": "crop-pad", "start": [1, 1, 1]}]})


def test_round_trip_layout_and_meta(tmp_path: Path) -> None:
    scan = make_scan()
    folder = write_cached_case(tmp_path, scan, CONFIG)
    assert folder == tmp_path / "case-a"
    on_disk = np.load(folder / "image.npy", allow_pickle=False)
    assert on_disk.dtype == np.float16 and on_disk.shape == (6, 2, 10, 8)  # (Z, C, X, Y)
    assert np.load(folder / "brain_mask.npy").shape == (6, 10, 8)
    assert np.load(folder / "seg.npy").dtype == np.uint8

    case = CachedCase(folder)
    assert case.case_id == "case-a" and case.modalities == ("t1", "flair")
    assert case.spatial_shape == (10, 8, 6) and case.num_slices == 6
    np.testing.assert_allclose(case.affine, scan.affine)
    assert isinstance(case.image, np.memmap)
    z = 3
    sl = case.slice(z)
    assert sl.dtype == np.float32 and sl.shape == (2, 10, 8)
    np.testing.assert_allclose(sl, scan.image[..., z], atol=2e-3)
    np.testing.assert_allclose(case.slice(z, [1])[0], scan.image[1, ..., z], atol=2e-3)
    patch = case.patch((2, 1, 0), (4, 5, 3))
    assert patch.shape == (2, 4, 5, 3)
    np.testing.assert_allclose(patch, scan.image[:, 2:6, 1:6, 0:3], atol=2e-3)
    np.testing.assert_array_equal(case.mask_patch((0, 0, 0), (10, 8, 6), seg=True), scan.seg)
    np.testing.assert_array_equal(case.brain_voxels_per_slice, scan.brain_mask.sum(axis=(0, 1)))
    np.testing.assert_array_equal(case.tumour_voxels_per_slice, (scan.seg > 0).sum(axis=(0, 1)))
    assert case.meta["crop_box"] == {"name": "crop-pad", "start": [1, 1, 1]}
    assert case.meta["pipeline"] == CONFIG and case.meta["original_shape"] == [12, 10, 8]
    back = case.to_scan()
    assert back.image.shape == scan.image.shape
    np.testing.assert_array_equal(back.seg, scan.seg)
    np.testing.assert_array_equal(back.brain_mask, scan.brain_mask)


def test_unlabelled_case_has_no_seg(tmp_path: Path) -> None:
    case = CachedCase(write_cached_case(tmp_path, make_scan(tumour=False), CONFIG))
    assert not case.has_seg and case.seg is None and case.tumour_voxels_per_slice is None
    assert not (case.path / "seg.npy").exists()
    with pytest.raises(DataError, match="no segmentation"):
        case.mask_patch((0, 0, 0), 2, seg=True)


def test_pickled_case_reopens_its_maps(tmp_path: Path) -> None:
    case = CachedCase(write_cached_case(tmp_path, make_scan(), CONFIG))
    _ = case.image  # open the memmap in the "parent"
    clone = pickle.loads(pickle.dumps(case))
    assert clone._maps == {}
    np.testing.assert_array_equal(clone.slice(2), case.slice(2))


def test_leftover_temp_dir_is_ignored_and_cleaned(tmp_path: Path) -> None:
    write_cached_case(tmp_path, make_scan("done"), CONFIG)
    dead = tmp_path / ".tmp-999999999-deadbeef-half"
    dead.mkdir()
    np.save(dead / "image.npy", np.zeros((2, 2), np.float16))
    (dead / "meta.json").write_text("{}")
    busy = tmp_path / ".tmp-1-cafe-busy"  # pid 1 is alive: another prepare may be writing it
    busy.mkdir()
    assert cache_index(tmp_path) == ["done"]
    assert clean_temp_dirs(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [busy.name, "done"]
    assert clean_temp_dirs(tmp_path, all_owners=True) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done"]


def test_interrupted_case_is_not_complete(tmp_path: Path) -> None:
    folder = write_cached_case(tmp_path, make_scan("broken"), CONFIG)
    (folder / "meta.json").unlink()  # e.g. copied by hand and cut short
    assert cache_index(tmp_path) == []
    assert not is_cached(tmp_path, "broken")
    with pytest.raises(DataError, match="not a complete cache entry"):
        CachedCase(folder)
    folder2 = write_cached_case(tmp_path, make_scan("noseg"), CONFIG)
    (folder2 / "seg.npy").unlink()
    assert not is_cached(tmp_path, "noseg")


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = np.save

    def save(path, arr, **kw):
        if str(path).endswith("seg.npy"):
            raise OSError("disk full")
        return real_save(path, arr, **kw)

    monkeypatch.setattr(cache_mod.np, "save", save)
    with pytest.raises(OSError, match="disk full"):
        write_cached_case(tmp_path, make_scan(), CONFIG)
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_entry(tmp_path: Path) -> None:
    write_cached_case(tmp_path, make_scan(), CONFIG)
    scan2 = make_scan()
    scan2 = Scan(scan2.case_id, scan2.image * 0 + 0.5, scan2.modalities, scan2.affine, scan2.seg, scan2.brain_mask)
    write_cached_case(tmp_path, scan2, [{"name": "other"}])
    case = CachedCase.open(tmp_path, "case-a")
    assert case.meta["pipeline"] == [{"name": "other"}]
    assert float(case.slice(0).max()) == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case-a"]


def test_bad_scans_are_refused(tmp_path: Path) -> None:
    scan = make_scan()
    nan = scan.image.copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="case-a: .*NaN"):
        write_cached_case(tmp_path, Scan("case-a", nan, scan.modalities, scan.affine), CONFIG)
    with pytest.raises(DataError, match="seg shape"):
        write_cached_case(tmp_path, Scan("case-a", scan.image, scan.modalities, scan.affine,
                                         seg=np.zeros((2, 2, 2), np.uint8)), CONFIG)
    assert cache_index(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_stale_when_a_source_file_changes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = {m: src / f"{m}.nii.gz" for m in ("t1", "flair")}
    for p in files.values():
        p.write_bytes(b"x" * 10)
    case = Case("case-a", files)
    cache_dir = tmp_path / "cache"
    write_cached_case(cache_dir, make_scan(), CONFIG, source=source_fingerprint(case))
    assert is_cached(cache_dir, case)
    assert not is_cached(cache_dir, case, modalities=["flair"])  # other modalities: rewrite
    st = files["flair"].stat()
    os.utime(files["flair"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not is_cached(cache_dir, case)
    assert is_cached(cache_dir, "case-a")  # completeness alone
    files["flair"].unlink()
    assert not is_cached(cache_dir, case)
    with pytest.raises(DataError, match="case-a: cannot read .*flair"):
        source_fingerprint(case)


def test_open_cache_lists_complete_cases(tmp_path: Path) -> None:
    for cid in ("b", "a"):
        write_cached_case(tmp_path, make_scan(cid), CONFIG)
    (tmp_path / "pipeline.json").write_text(json.dumps({}))
    assert [c.case_id for c in open_cache(tmp_path)] == ["a", "b"]
    assert cache_index(tmp_path / "missing") == []


def test_float16_cast_is_the_same_with_or_without_torch() -> None:
    import torch  # noqa: F401 - the fast path is taken only when torch is imported

    from brats_ad.data.cache import _to_float16

    rng = np.random.default_rng(0)
    image = (rng.normal(size=(3, 5, 6, 7)) * 100).astype(np.float32)
    for view in (image, image.transpose(0, 3, 1, 2), image[:, ::-1]):
        out = _to_float16(view)
        assert out.dtype == np.float16
        np.testing.assert_array_equal(out, view.astype(np.float16))
