"""BraTS discovery: both namings, layouts, modality subsets and every malformed-folder message."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from brats_ad.data.brats import BratsDataset, expected_file_name
from brats_ad.errors import ConfigError, DataError


def test_discovers_2021_naming_sorted_with_seg(brats2021_root: Path) -> None:
    cases = BratsDataset(brats2021_root).cases()
    assert [c.case_id for c in cases] == ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002"]
    case = cases[0]
    assert case.naming == "brats2021" and case.dataset == "brats"
    assert case.modalities == ("t1", "t1ce", "t2", "flair")
    assert case.images["flair"].name == "BraTS2021_00000_flair.nii.gz"
    assert case.seg is not None and case.seg.name == "BraTS2021_00000_seg.nii.gz"


def test_discovers_2023_naming_and_maps_modalities(brats2023_root: Path) -> None:
    cases = BratsDataset(brats2023_root).cases()
    assert [c.case_id for c in cases] == ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000", "BraTS-MET-00002-000"]
    case = cases[2]
    assert case.naming == "brats2023"
    assert {m: p.name for m, p in case.images.items()} == {
        "t1": "BraTS-MET-00002-000-t1n.nii.gz",
        "t1ce": "BraTS-MET-00002-000-t1c.nii.gz",
        "t2": "BraTS-MET-00002-000-t2w.nii.gz",
        "flair": "BraTS-MET-00002-000-t2f.nii.gz",
    }
    assert case.seg is not None and case.seg.name == "BraTS-MET-00002-000-seg.nii.gz"


@pytest.mark.parametrize("prefix", ["MEN", "PED", "SSA", "GoAT"])
def test_any_2023_prefix(tmp_path: Path, brats_case_writer, prefix: str) -> None:
    brats_case_writer(tmp_path, f"BraTS-{prefix}-00042-001", naming="2023", with_seg=False)
    (case,) = BratsDataset(tmp_path).cases()
    assert case.case_id == f"BraTS-{prefix}-00042-001" and case.naming == "brats2023"


def test_mixed_namings_and_uncompressed_nii(tmp_path: Path, brats_case_writer) -> None:
    brats_case_writer(tmp_path, "BraTS20_Training_001", naming="2021", ext=".nii")
    brats_case_writer(tmp_path, "BraTS-GLI-00001-000", naming="2023")
    cases = BratsDataset(tmp_path).cases()
    assert [(c.case_id, c.naming) for c in cases] == [
        ("BraTS-GLI-00001-000", "brats2023"),
        ("BraTS20_Training_001", "brats2021"),
    ]
    assert cases[1].images["t1"].suffix == ".nii"


def test_root_one_level_above_cases(tmp_path: Path, brats_case_writer) -> None:
    # Kaggle: ~/data/BraTS2021_Training_Data/BraTS2021_00000/...
    brats_case_writer(tmp_path / "BraTS2021_Training_Data", "BraTS2021_00000")
    (tmp_path / "notes.txt").write_text("not a case")
    (case,) = BratsDataset(tmp_path).cases()
    assert case.case_id == "BraTS2021_00000"


def test_root_is_a_single_case_folder(tmp_path: Path, brats_case_writer) -> None:
    folder = brats_case_writer(tmp_path, "BraTS2021_00007")
    (case,) = BratsDataset(folder).cases()
    assert case.case_id == "BraTS2021_00007"


def test_two_subfolders_with_cases_is_ambiguous(tmp_path: Path, brats_case_writer) -> None:
    brats_case_writer(tmp_path / "Training", "BraTS2021_00000")
    brats_case_writer(tmp_path / "Validation", "BraTS2021_00001", with_seg=False)
    with pytest.raises(DataError, match=r"2 subfolders \(Training, Validation\).*point the dataset root"):
        BratsDataset(tmp_path).cases()


def test_ignores_stray_files_hidden_and_non_case_folders(brats2021_root: Path) -> None:
    (brats2021_root / ".ipynb_checkpoints").mkdir()
    (brats2021_root / "__MACOSX").mkdir()
    (brats2021_root / "docs").mkdir()
    (brats2021_root / "docs" / "readme.md").write_text("x")
    (brats2021_root / "BraTS2021_00000" / "notes.txt").write_text("x")
    (brats2021_root / "name_mapping.csv").write_text("x")
    assert len(BratsDataset(brats2021_root).cases()) == 3


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (("flair",), ("flair",)),
        (("T2F",), ("flair",)),
        (("flair", "t1"), ("flair", "t1")),
        (("t1c", "T2w"), ("t1ce", "t2")),
        ("flair", ("flair",)),
    ],
)
def test_modality_subsets_any_spelling_keep_order(
    brats2023_root: Path, requested, expected: tuple[str, ...]
) -> None:
    dataset = BratsDataset(brats2023_root, modalities=requested)
    assert dataset.modalities == expected
    assert all(c.modalities == expected for c in dataset.cases())


def test_flair_only_cases(tmp_path: Path, brats_case_writer) -> None:
    for i in range(2):
        brats_case_writer(tmp_path, f"BraTS2021_{i:05d}", modalities=("flair",), with_seg=False)
    cases = BratsDataset(tmp_path, modalities=["flair"]).cases()
    assert [c.modalities for c in cases] == [("flair",), ("flair",)]
    assert all(c.seg is None for c in cases)


def test_missing_modality_names_case_file_and_fix(tmp_path: Path, brats_case_writer) -> None:
    brats_case_writer(tmp_path, "BraTS2021_00000")
    brats_case_writer(tmp_path, "BraTS2021_00001", modalities=("t1", "t2", "flair"))
    with pytest.raises(
        DataError,
        match=r"case BraTS2021_00001: no t1ce image \(expected BraTS2021_00001_t1ce\.nii\.gz in .*"
        r"BraTS2021_00001\); add the file, remove the case folder, or drop 't1ce'",
    ):
        BratsDataset(tmp_path).cases()
    # the same folder is fine when t1ce is not requested
    assert len(BratsDataset(tmp_path, modalities=("t1", "flair")).cases()) == 2


def test_missing_modality_2023_names_2023_file(tmp_path: Path, brats_case_writer) -> None:
    brats_case_writer(tmp_path, "BraTS-MET-00003-000", naming="2023", modalities=("t1", "t2"))
    with pytest.raises(DataError, match=r"BraTS-MET-00003-000: no flair image \(expected BraTS-MET-00003-000-t2f\.nii\.gz"):
        BratsDataset(tmp_path, modalities=("flair",)).cases()


def test_seg_optional_unless_required(tmp_path: Path, brats_case_writer) -> None:
    brats_case_writer(tmp_path, "BraTS2021_00000", with_seg=False)
    (case,) = BratsDataset(tmp_path).cases()
    assert case.seg is None
    with pytest.raises(
        DataError,
        match=r"case BraTS2021_00000: no segmentation \(expected BraTS2021_00000_seg\.nii\.gz.*require_seg = false",
    ):
        BratsDataset(tmp_path, require_seg=True).cases()


def test_folder_without_cases_says_expected_layout(tmp_path: Path) -> None:
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "brain.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match=rf"no BraTS case found in {tmp_path}; expected case folders such as BraTS2021_00000/"):
        BratsDataset(tmp_path).cases()


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"BraTS data folder .*nope does not exist"):
        BratsDataset(tmp_path / "nope").cases()


def test_two_files_for_one_modality(tmp_path: Path, brats_case_writer) -> None:
    folder = brats_case_writer(tmp_path, "BraTS2021_00000")
    (folder / "BraTS2021_00000_flair.nii").write_bytes(b"")
    with pytest.raises(DataError, match=r"case BraTS2021_00000: 2 files for flair \(BraTS2021_00000_flair\.nii, BraTS2021_00000_flair\.nii\.gz\)"):
        BratsDataset(tmp_path).cases()


def test_one_case_mixing_namings(tmp_path: Path, brats_case_writer) -> None:
    folder = brats_case_writer(tmp_path, "BraTS2021_00000", modalities=("t1",), with_seg=False)
    (folder / "BraTS2021_00000-t2f.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match=r"case BraTS2021_00000: mixes 2021 names"):
        BratsDataset(tmp_path).cases()


@pytest.mark.parametrize(
    ("modalities", "message"),
    [
        (("t1", "dwi"), r"unknown modality 'dwi'"),
        ((), r"modalities is empty"),
        (("flair", "T2F"), r"name flair twice"),
    ],
)
def test_bad_modalities_are_config_errors(tmp_path: Path, modalities, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BratsDataset(tmp_path, modalities=modalities)


def test_expected_file_name() -> None:
    assert expected_file_name("BraTS2021_00001", "brats2021", "flair") == "BraTS2021_00001_flair.nii.gz"
    assert expected_file_name("BraTS-PED-00001-000", "brats2023", "t1ce") == "BraTS-PED-00001-000-t1c.nii.gz"


def test_registered_as_dataset_plugin(brats2021_root: Path) -> None:
    from brats_ad.data import plugin
    from brats_ad.registry import Registry

    registry = Registry("datasets")
    plugin.brats_ad_register_datasets(registry)
    entry = registry.get("brats")
    dataset = entry.load()(brats2021_root, **entry.resolve_params({"modalities": ("flair",)}))
    assert dataset.name == "brats" and len(dataset.cases()) == 3


def test_discovery_of_1000_cases_is_fast(tmp_path: Path) -> None:
    # Empty files: discovery must only list folders, never open an image.
    for i in range(1000):
        folder = f"{tmp_path}/BraTS2021_{i:05d}"
        os.mkdir(folder)
        for token in ("t1", "t1ce", "t2", "flair", "seg"):
            os.close(os.open(f"{folder}/BraTS2021_{i:05d}_{token}.nii.gz", os.O_CREAT | os.O_WRONLY))
    start = time.perf_counter()
    cases = BratsDataset(tmp_path, require_seg=True).cases()
    elapsed = time.perf_counter() - start
    assert len(cases) == 1000 and cases[-1].case_id == "BraTS2021_00999"
    # ~0.1 s on a laptop; the bound leaves room for a loaded CI runner
    assert elapsed < 2.0, f"discovery of 1,000 cases took {elapsed:.2f} s"


def test_real_brats2023_met_sample(shared_data: Path) -> None:
    (case,) = BratsDataset(shared_data / "real_brats2023_met").cases()
    assert case.case_id == "BraTS-MET-00110-000"
    assert case.naming == "brats2023" and case.seg is None
    assert case.images["flair"].name == "BraTS-MET-00110-000-t2f.nii.gz"
    assert case.images["t1"].name == "BraTS-MET-00110-000-t1n.nii.gz"
