"""Fixtures that write small BraTS-like cases (both namings) and healthy scans into tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

try:  # tests/ as a package, or pytest's default rootdir-prepend import mode
    from ._data_factories import write_brats_case, write_healthy_subject, write_nifti
except ImportError:
    from _data_factories import write_brats_case, write_healthy_subject, write_nifti


@pytest.fixture
def brats_case_writer():
    """The :func:`write_brats_case` factory (root, case_id, naming, shape, modalities, ...)."""
    return write_brats_case


@pytest.fixture
def healthy_subject_writer():
    """The :func:`write_healthy_subject` factory."""
    return write_healthy_subject


@pytest.fixture
def nifti_writer():
    """The :func:`write_nifti` helper (path, data, affine=None)."""
    return write_nifti


@pytest.fixture
def brats2021_root(tmp_path: Path) -> Path:
    """Three labelled cases in BraTS 2021 naming."""
    root = tmp_path / "brats2021"
    for i in range(3):
        write_brats_case(root, f"BraTS2021_{i:05d}", naming="2021", rng=i)
    return root


@pytest.fixture
def brats2023_root(tmp_path: Path) -> Path:
    """Three labelled cases in BraTS 2023 naming (glioma and metastasis prefixes)."""
    root = tmp_path / "brats2023"
    for i, prefix in enumerate(("GLI", "GLI", "MET")):
        write_brats_case(root, f"BraTS-{prefix}-{i:05d}-000", naming="2023", rng=i)
    return root
