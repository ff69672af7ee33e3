"""load_case: arrays, order, masks, provenance, and one clear message per kind of bad file."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_ad.data.brats import BratsDataset
from brats_ad.data.loading import load_case
from brats_ad.data.scan import Case
from brats_ad.errors import ConfigError, DataError

SHAPE = (24, 24, 16)


def _only_case(root: Path, **kwargs) -> Case:
    (case,) = BratsDataset(root, **kwargs).cases()
    return case


@pytest.mark.parametrize("naming", ["2021", "2023"])
def test_loads_float32_channels_seg_mask_and_meta(tmp_path: Path, brats_case_writer, naming: str) -> None:
    brats_case_writer(tmp_path, naming=naming)
    case = _only_case(tmp_path)
    scan = load_case(case)
    assert scan.case_id == case.case_id
    assert scan.image.shape == (4, *SHAPE) and scan.image.dtype == np.float32
    assert scan.image.flags.c_contiguous
    assert scan.modalities == ("t1", "t1ce", "t2", "flair")
    for c, modality in enumerate(scan.modalities):
        on_disk = np.asanyarray(nib.load(case.images[modality]).dataobj)
        np.testing.assert_array_equal(scan.image[c], on_disk.astype(np.float32))
    assert scan.seg is not None and scan.seg.dtype == np.uint8 and scan.seg.shape == SHAPE
    expected_labels = {"2021": {0, 1, 2, 4}, "2023": {0, 1, 2, 3}}[naming]
    assert set(np.unique(scan.seg).tolist()) == expected_labels
    np.testing.assert_array_equal(scan.brain_mask, np.any(scan.image != 0, axis=0))
    assert scan.brain_mask.dtype == bool and 0 < scan.brain_mask.sum() < scan.brain_mask.size
    np.testing.assert_array_equal(scan.affine, np.eye(4))
    meta = json.loads(json.dumps(scan.meta))  # the cache stores it as JSON
    assert meta["naming"] == f"brats{naming}" and meta["dataset"] == "brats"
    assert meta["original_shape"] == list(SHAPE)
    assert meta["original_affine"] == np.eye(4).tolist()
    assert set(meta["source_files"]) == {"t1", "t1ce", "t2", "flair", "seg"}
    flair = meta["source_files"]["flair"]
    assert flair["path"] == str(case.images["flair"])
    assert flair["size"] == case.images["flair"].stat().st_size and flair["mtime"] > 0


def test_modality_subset_and_order_at_load(brats2021_root: Path) -> None:
    case = BratsDataset(brats2021_root).cases()[0]
    full = load_case(case)
    scan = load_case(case, ["T2F", "t1"])
    assert scan.modalities == ("flair", "t1")
    np.testing.assert_array_equal(scan.image[0], full.image[3])
    np.testing.assert_array_equal(scan.image[1], full.image[0])
    assert set(scan.meta["source_files"]) == {"flair", "t1", "seg"}


def test_dataset_subset_is_the_default(brats2023_root: Path) -> None:
    case = BratsDataset(brats2023_root, modalities=("flair",)).cases()[0]
    scan = load_case(case)
    assert scan.modalities == ("flair",) and scan.image.shape == (1, *SHAPE)


def test_modality_not_discovered(brats2021_root: Path) -> None:
    case = BratsDataset(brats2021_root, modalities=("flair",)).cases()[0]
    with pytest.raises(DataError, match=r"case BraTS2021_00000: modality 't1' was not discovered \(the case has flair\)"):
        load_case(case, ["t1"])
    with pytest.raises(ConfigError, match="unknown modality 'pd'"):
        load_case(case, ["pd"])
    with pytest.raises(ConfigError, match="name flair twice"):
        load_case(case, ["flair", "FLAIR"])


def test_no_seg_gives_none(tmp_path: Path, brats_case_writer) -> None:
    brats_case_writer(tmp_path, with_seg=False)
    scan = load_case(_only_case(tmp_path))
    assert scan.seg is None and "seg" not in scan.meta["source_files"]


def test_trailing_singleton_dimension_is_squeezed(tmp_path: Path, brats_case_writer, nifti_writer) -> None:
    folder = brats_case_writer(tmp_path, modalities=("t1", "flair"))
    flair = folder / "BraTS2021_00000_flair.nii.gz"
    data = np.asanyarray(nib.load(flair).dataobj)
    nifti_writer(flair, data[..., None])
    scan = load_case(_only_case(tmp_path, modalities=("t1", "flair")))
    assert scan.image.shape == (2, *SHAPE)
    np.testing.assert_array_equal(scan.image[1], data)


def test_4d_series_is_an_error(tmp_path: Path, brats_case_writer, nifti_writer) -> None:
    folder = brats_case_writer(tmp_path, modalities=("flair",))
    nifti_writer(folder / "BraTS2021_00000_flair.nii.gz", np.ones((*SHAPE, 3), dtype=np.int16))
    with pytest.raises(
        DataError,
        match=r"case BraTS2021_00000: .*BraTS2021_00000_flair\.nii\.gz has shape \(24, 24, 16, 3\), expected one 3-D volume",
    ):
        load_case(_only_case(tmp_path, modalities=("flair",)))


def test_2d_image_is_an_error(tmp_path: Path, brats_case_writer, nifti_writer) -> None:
    folder = brats_case_writer(tmp_path, modalities=("flair",))
    nifti_writer(folder / "BraTS2021_00000_flair.nii.gz", np.ones((24, 24), dtype=np.int16))
    with pytest.raises(DataError, match=r"has shape \(24, 24\), expected one 3-D volume"):
        load_case(_only_case(tmp_path, modalities=("flair",)))


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: raw[: len(raw) // 2], id="truncated-gzip"),
        pytest.param(lambda raw: raw[:40], id="truncated-header"),
        pytest.param(lambda raw: b"<html>404 not found</html>" * 20, id="not-gzip"),
        pytest.param(lambda raw: b"", id="empty"),
    ],
)
def test_corrupt_file_names_case_file_and_fix(tmp_path: Path, brats_case_writer, damage) -> None:
    folder = brats_case_writer(tmp_path)
    t2 = folder / "BraTS2021_00000_t2.nii.gz"
    t2.write_bytes(damage(t2.read_bytes()))
    with pytest.raises(
        DataError,
        match=r"^case BraTS2021_00000: cannot read .*BraTS2021_00000_t2\.nii\.gz \(.*\); the file is "
        r"corrupt or truncated - download or extract it again$",
    ):
        load_case(_only_case(tmp_path))


def test_truncated_uncompressed_nii(tmp_path: Path, brats_case_writer) -> None:
    folder = brats_case_writer(tmp_path, ext=".nii", modalities=("flair",), with_seg=False)
    flair = folder / "BraTS2021_00000_flair.nii"
    flair.write_bytes(flair.read_bytes()[:-500])
    with pytest.raises(DataError, match=r"cannot read .*BraTS2021_00000_flair\.nii \(.*\); the file is corrupt"):
        load_case(_only_case(tmp_path, modalities=("flair",)))


def test_file_removed_after_discovery(brats2021_root: Path) -> None:
    case = BratsDataset(brats2021_root).cases()[0]
    case.images["t2"].unlink()
    with pytest.raises(DataError, match=r"case BraTS2021_00000: file .*_t2\.nii\.gz disappeared after discovery"):
        load_case(case)


def test_shape_mismatch_between_modalities(tmp_path: Path, brats_case_writer) -> None:
    brats_case_writer(tmp_path, modalities=("t1", "t1ce", "t2"), with_seg=False)
    brats_case_writer(tmp_path, modalities=("flair",), shape=(24, 24, 15), with_seg=False)
    with pytest.raises(
        DataError,
        match=r"case BraTS2021_00000: .*BraTS2021_00000_flair\.nii\.gz has shape \(24, 24, 15\) but "
        r"BraTS2021_00000_t1\.nii\.gz has \(24, 24, 16\); BraTS modalities must share one voxel grid",
    ):
        load_case(_only_case(tmp_path))


def test_affine_mismatch_between_modalities(tmp_path: Path, brats_case_writer) -> None:
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    brats_case_writer(tmp_path, modalities=("t1", "t2"), with_seg=False)
    brats_case_writer(tmp_path, modalities=("flair",), affine=shifted, with_seg=False)
    with pytest.raises(
        DataError,
        match=r"case BraTS2021_00000: .*_flair\.nii\.gz has an affine up to 2 mm away from that of "
        r"BraTS2021_00000_t1\.nii\.gz",
    ):
        load_case(_only_case(tmp_path, modalities=("t1", "t2", "flair")))


def test_affine_within_tolerance_is_accepted(tmp_path: Path, brats_case_writer) -> None:
    nudged = np.eye(4)
    nudged[0, 3] = 1e-5
    brats_case_writer(tmp_path, modalities=("t1",), with_seg=False)
    brats_case_writer(tmp_path, modalities=("flair",), affine=nudged, with_seg=False)
    assert load_case(_only_case(tmp_path, modalities=("t1", "flair"))).image.shape == (2, *SHAPE)


def test_nan_voxels(tmp_path: Path, brats_case_writer, nifti_writer) -> None:
    folder = brats_case_writer(tmp_path, modalities=("t1", "flair"), with_seg=False)
    data = np.asanyarray(nib.load(folder / "BraTS2021_00000_flair.nii.gz").dataobj).astype(np.float32)
    data[3, 4, 5] = np.nan
    data[0, 0, 0] = np.inf
    nifti_writer(folder / "BraTS2021_00000_flair.nii.gz", data)
    with pytest.raises(DataError, match=r"case BraTS2021_00000: .*_flair\.nii\.gz has 2 NaN/Inf voxels; re-export"):
        load_case(_only_case(tmp_path, modalities=("t1", "flair")))


@pytest.mark.parametrize("value", [0, 7])
def test_blank_volume(tmp_path: Path, brats_case_writer, nifti_writer, value: int) -> None:
    folder = brats_case_writer(tmp_path, modalities=("t1", "t2"), with_seg=False)
    nifti_writer(folder / "BraTS2021_00000_t2.nii.gz", np.full(SHAPE, value, dtype=np.int16))
    with pytest.raises(DataError, match=rf"case BraTS2021_00000: .*_t2\.nii\.gz is blank \(every voxel = {value}\)"):
        load_case(_only_case(tmp_path, modalities=("t1", "t2")))


def test_seg_shape_mismatch(tmp_path: Path, brats_case_writer, nifti_writer) -> None:
    folder = brats_case_writer(tmp_path)
    nifti_writer(folder / "BraTS2021_00000_seg.nii.gz", np.zeros((24, 24, 15), dtype=np.uint8))
    with pytest.raises(
        DataError,
        match=r"case BraTS2021_00000: segmentation .*_seg\.nii\.gz has shape \(24, 24, 15\) but the images have \(24, 24, 16\)",
    ):
        load_case(_only_case(tmp_path))


def test_seg_affine_mismatch_warns(tmp_path: Path, brats_case_writer, nifti_writer) -> None:
    folder = brats_case_writer(tmp_path)
    shifted = np.eye(4)
    shifted[2, 3] = 0.5
    seg = np.asanyarray(nib.load(folder / "BraTS2021_00000_seg.nii.gz").dataobj)
    nifti_writer(folder / "BraTS2021_00000_seg.nii.gz", seg, shifted)
    with pytest.warns(UserWarning, match=r"BraTS2021_00000: segmentation .* affine differs"):
        scan = load_case(_only_case(tmp_path))
    np.testing.assert_array_equal(scan.seg, seg)


@pytest.mark.parametrize(
    ("naming", "bad_label", "allowed"),
    [("2021", 3, r"\[0, 1, 2, 4\]"), ("2023", 5, r"\[0, 1, 2, 3, 4\]"), ("2021", 255, r"\[0, 1, 2, 4\]")],
)
def test_unexpected_seg_labels(tmp_path: Path, brats_case_writer, nifti_writer, naming, bad_label, allowed) -> None:
    folder = brats_case_writer(tmp_path, naming=naming)
    case = _only_case(tmp_path)
    seg = np.asanyarray(nib.load(case.seg).dataobj).copy()
    seg[0, 0, 0] = bad_label
    nifti_writer(case.seg, seg)
    with pytest.raises(
        DataError,
        match=rf"case {case.case_id}: segmentation .*{case.seg.name} has labels \[{bad_label}\] outside {allowed} "
        rf"expected for brats{naming} naming",
    ):
        load_case(case)
    assert folder.name == case.case_id


def test_brats2024_label_4_is_accepted_with_2023_naming(tmp_path: Path, brats_case_writer, nifti_writer) -> None:
    """BraTS 2024 GLI post-treatment (resection cavity) and PED segs use label 4 with 2023 naming."""
    brats_case_writer(tmp_path, naming="2023")
    case = _only_case(tmp_path)
    seg = np.asanyarray(nib.load(case.seg).dataobj).copy()
    seg[0, 0, 0] = 4
    nifti_writer(case.seg, seg)
    assert load_case(case).seg[0, 0, 0] == 4


def test_float_seg_with_integer_values_is_accepted(tmp_path: Path, brats_case_writer, nifti_writer) -> None:
    brats_case_writer(tmp_path)
    case = _only_case(tmp_path)
    seg = np.asanyarray(nib.load(case.seg).dataobj)
    nifti_writer(case.seg, seg.astype(np.float64))
    out = load_case(case).seg
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, seg)


def test_probability_map_as_seg_is_an_error(tmp_path: Path, brats_case_writer, nifti_writer) -> None:
    brats_case_writer(tmp_path)
    case = _only_case(tmp_path)
    nifti_writer(case.seg, np.full(SHAPE, 0.25, dtype=np.float32))
    with pytest.raises(DataError, match=r"segmentation .*_seg\.nii\.gz holds non-integer values"):
        load_case(case)


def test_negative_seg_label(tmp_path: Path, brats_case_writer, nifti_writer) -> None:
    brats_case_writer(tmp_path)
    case = _only_case(tmp_path)
    nifti_writer(case.seg, np.full(SHAPE, -1, dtype=np.int16))
    with pytest.raises(DataError, match=r"has labels \[-1\] outside"):
        load_case(case)


def test_custom_naming_has_no_brain_mask_and_accepts_labels_0_to_4(tmp_path: Path, brats_case_writer, nifti_writer) -> None:
    brats_case_writer(tmp_path)
    case = replace(_only_case(tmp_path), naming="custom", dataset="other")
    nifti_writer(case.seg, np.arange(np.prod(SHAPE)).reshape(SHAPE).astype(np.uint8) % 5)
    scan = load_case(case)
    assert scan.brain_mask is None
    assert set(np.unique(scan.seg).tolist()) == {0, 1, 2, 3, 4}
    assert scan.meta["naming"] == "custom"


def test_scaled_integer_file_is_read_with_its_scaling(tmp_path: Path, brats_case_writer) -> None:
    folder = brats_case_writer(tmp_path, modalities=("flair",), with_seg=False)
    path = folder / "BraTS2021_00000_flair.nii.gz"
    img = nib.load(path)
    values = np.asanyarray(img.dataobj) * 0.5 + 1000.0  # int16 storage then needs slope/inter
    out = nib.Nifti1Image(values.astype(np.float32), img.affine)
    out.set_data_dtype(np.int16)
    nib.save(out, path)
    assert nib.load(path).dataobj.slope != 1.0  # the file really is scaled
    scan = load_case(_only_case(tmp_path, modalities=("flair",)))
    np.testing.assert_allclose(scan.image[0], values, atol=0.1)


def test_real_brats2023_met_case(shared_data: Path) -> None:
    (case,) = BratsDataset(shared_data / "real_brats2023_met").cases()
    start = time.perf_counter()
    scan = load_case(case)
    elapsed = time.perf_counter() - start
    assert scan.image.shape == (4, 240, 240, 155) and scan.image.dtype == np.float32
    assert scan.modalities == ("t1", "t1ce", "t2", "flair")
    assert scan.seg is None
    assert scan.brain_mask is not None and scan.brain_mask.shape == (240, 240, 155)
    assert 0.05 < scan.brain_mask.mean() < 0.5  # a skull-stripped brain, not the whole box
    assert scan.meta["naming"] == "brats2023"
    assert scan.meta["source_files"]["flair"]["path"].endswith("BraTS-MET-00110-000-t2f.nii.gz")
    flair = np.asanyarray(nib.load(case.images["flair"]).dataobj)
    np.testing.assert_array_equal(scan.image[3], flair)
    assert elapsed < 10.0, f"loading the real case took {elapsed:.1f} s"


def test_native_layout_holds_the_same_values(tmp_path: Path, brats_case_writer) -> None:
    brats_case_writer(tmp_path)
    case = _only_case(tmp_path)
    c, native = load_case(case), load_case(case, layout="native")
    assert native.image.shape == c.image.shape and native.image.dtype == np.float32
    np.testing.assert_array_equal(native.image, c.image)
    np.testing.assert_array_equal(native.brain_mask, c.brain_mask)
    # the file's own voxel order: X fastest in memory, channels between slices
    assert native.image.strides[1] == 4 and native.image.strides[3] > native.image.strides[0]
    with pytest.raises(ValueError, match="layout"):
        load_case(case, layout="fortran")


def test_gunzip_reads_multi_member_streams_and_refuses_truncated() -> None:
    import gzip

    from brats_ad.data.loading import gunzip, gzip_backend

    assert gzip_backend() in ("isal", "zlib")
    assert gunzip(gzip.compress(b"abc") + gzip.compress(b"def") + b"\x00" * 4) == b"abcdef"
    with pytest.raises(EOFError):
        gunzip(gzip.compress(b"abc" * 1000)[:-12])
