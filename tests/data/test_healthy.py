"""Healthy-control discovery by file pattern (IXI-like), and how such scans load."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats_ad.data.healthy import HealthyDataset
from brats_ad.data.loading import load_case
from brats_ad.errors import ConfigError, DataError


@pytest.fixture
def ixi_root(tmp_path: Path, healthy_subject_writer) -> Path:
    """IXI naming: T1, T2 and PD per subject, plus an MRA file that no modality claims."""
    root = tmp_path / "IXI"
    for i, subject in enumerate(["IXI002-Guys-0828", "IXI012-HH-1211", "IXI013-HH-1212"]):
        healthy_subject_writer(root, subject, modalities=("T1", "T2", "PD"), rng=i)
    (root / "IXI002-Guys-0828-MRA.nii.gz").write_bytes(b"")
    (root / "README.txt").write_text("IXI")
    return root


def test_ixi_pattern_finds_subjects(ixi_root: Path) -> None:
    cases = HealthyDataset(ixi_root).cases()
    assert [c.case_id for c in cases] == ["IXI002-Guys-0828", "IXI012-HH-1211", "IXI013-HH-1212"]
    case = cases[0]
    assert case.modalities == ("t1",)
    assert case.images["t1"].name == "IXI002-Guys-0828-T1.nii.gz"
    assert case.seg is None and case.naming == "custom" and case.dataset == "healthy"


def test_several_modalities_case_insensitive(ixi_root: Path) -> None:
    cases = HealthyDataset(ixi_root, modalities=("T2", "t1")).cases()
    assert cases[1].modalities == ("t2", "t1")
    assert cases[1].images["t2"].name == "IXI012-HH-1211-T2.nii.gz"


def test_missing_modality_is_an_error_naming_subject_and_file(ixi_root: Path) -> None:
    (ixi_root / "IXI012-HH-1211-T2.nii.gz").unlink()
    with pytest.raises(
        DataError,
        match=r"subject IXI012-HH-1211: no t2 image \(expected IXI012-HH-1211-T2\.nii\.gz in .*IXI\); "
        r"add it, drop the modality, or set on_missing = \"skip\"",
    ):
        HealthyDataset(ixi_root, modalities=("t1", "t2")).cases()


def test_on_missing_skip_warns_and_drops(ixi_root: Path) -> None:
    (ixi_root / "IXI012-HH-1211-T2.nii.gz").unlink()
    with pytest.warns(UserWarning, match=r"skipped 1 subject\(s\) lacking one of t1, t2 \(e\.g\. IXI012-HH-1211\)"):
        cases = HealthyDataset(ixi_root, modalities=("t1", "t2"), on_missing="skip").cases()
    assert [c.case_id for c in cases] == ["IXI002-Guys-0828", "IXI013-HH-1212"]


def test_nested_bids_like_pattern(tmp_path: Path, healthy_subject_writer) -> None:
    pattern = "{subject}/anat/{subject}_{modality}.nii.gz"
    for subject in ("sub-01", "sub-02"):
        healthy_subject_writer(tmp_path, subject, modalities=("T1w", "FLAIR"), pattern=pattern)
    # a file whose folder and name disagree on the subject is not matched
    healthy_subject_writer(tmp_path, "sub-02", modalities=("T2w",), pattern="sub-03/anat/{subject}_{modality}.nii.gz")
    cases = HealthyDataset(tmp_path, modalities=("t1", "flair"), pattern=pattern).cases()
    assert [c.case_id for c in cases] == ["sub-01", "sub-02"]
    assert cases[0].images["flair"] == tmp_path / "sub-01" / "anat" / "sub-01_FLAIR.nii.gz"


def test_modality_names_for_unusual_spellings(tmp_path: Path, healthy_subject_writer) -> None:
    healthy_subject_writer(tmp_path, "s1", modalities=("MPRAGE",), pattern="{subject}_{modality}.nii")
    dataset = HealthyDataset(tmp_path, pattern="{subject}_{modality}.nii", modality_names={"MPRAGE": "T1"})
    (case,) = dataset.cases()
    assert case.case_id == "s1" and case.images["t1"].name == "s1_MPRAGE.nii"


def test_no_match_names_folder_pattern_and_contents(tmp_path: Path) -> None:
    (tmp_path / "scan_001.nii.gz").write_bytes(b"")
    with pytest.raises(
        DataError,
        match=rf"no file in {tmp_path} matches pattern '\{{subject\}}-\{{modality\}}\.nii\.gz' \(e\.g\. "
        r"IXI002-Guys-0828-T1\.nii\.gz\).*found e\.g\. scan_001\.nii\.gz - set pattern",
    ):
        HealthyDataset(tmp_path).cases()


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"healthy-scan folder .*missing does not exist"):
        HealthyDataset(tmp_path / "missing").cases()


def test_two_files_for_one_modality(ixi_root: Path, healthy_subject_writer) -> None:
    healthy_subject_writer(ixi_root, "IXI013-HH-1212", modalities=("t1w",))
    with pytest.raises(DataError, match=r"subject IXI013-HH-1212: 2 files for t1 \(IXI013-HH-1212-T1\.nii\.gz, IXI013-HH-1212-t1w\.nii\.gz\)"):
        HealthyDataset(ixi_root).cases()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pattern": "{subject}.nii.gz"}, r"needs \{subject\} and exactly one \{modality\}"),
        ({"pattern": "{modality}.nii.gz"}, r"needs \{subject\} and exactly one \{modality\}"),
        ({"pattern": "{subject}-{modality}-{modality}.nii"}, r"exactly one \{modality\}"),
        ({"pattern": "{subject}-{site}-{modality}.nii"}, r"unknown placeholder\(s\) \['site'\]"),
        ({"pattern": "../{subject}-{modality}.nii"}, r"relative to the dataset root"),
        ({"modalities": ("dwi",)}, r"unknown modality 'dwi'"),
        ({"modality_names": {"MPRAGE": "pd"}}, r"unknown modality 'pd'"),
        ({"on_missing": "ignore"}, r"on_missing must be one of error, skip"),
    ],
)
def test_bad_parameters_are_config_errors(tmp_path: Path, kwargs, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        HealthyDataset(tmp_path, **kwargs)


def test_loads_without_brain_mask(ixi_root: Path) -> None:
    case = HealthyDataset(ixi_root).cases()[0]
    scan = load_case(case)
    assert scan.image.shape == (1, 24, 24, 16) and scan.image.dtype == np.float32
    assert scan.brain_mask is None and scan.seg is None  # the skullstrip step computes the mask
    assert scan.meta["naming"] == "custom" and scan.meta["dataset"] == "healthy"
    assert (scan.image[0] != 0).all()  # raw scan: the background is not zero


def test_modalities_on_different_grids_are_resampled_onto_the_first(tmp_path: Path, healthy_subject_writer, nifti_writer) -> None:
    (t1,) = healthy_subject_writer(tmp_path, "IXI002-Guys-0828", modalities=("T1",))
    # T2 on a coarser grid covering the same field of view (IXI's T1 and T2 grids differ too)
    coarse = np.diag([2.0, 2.0, 2.0, 1.0])
    coarse[:3, 3] = 0.5
    nifti_writer(tmp_path / "IXI002-Guys-0828-T2.nii.gz", np.full((12, 12, 8), 100, dtype=np.int16), coarse)
    (case,) = HealthyDataset(tmp_path, modalities=("t1", "t2")).cases()
    scan = load_case(case)
    assert scan.image.shape == (2, 24, 24, 16)
    np.testing.assert_array_equal(scan.affine, nib.load(t1).affine)
    assert scan.meta["resampled_to_grid_of"] == {"reference": "t1", "modalities": ["t2"]}
    np.testing.assert_allclose(scan.image[1, 2:-2, 2:-2, 2:-2], 100.0, atol=1e-3)
