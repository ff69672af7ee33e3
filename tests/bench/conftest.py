"""Shared bench test data: six tiny BraTS-2021-layout cases (two tumour-free), written once."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "data"))  # _data_factories


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six cases 24x24x16 (lesion in four, seg all zero in two) in BraTS 2021 naming."""
    import nibabel as nib
    from _data_factories import write_brats_case

    root = tmp_path_factory.mktemp("tiny-brats")
    for i in range(6):
        folder = write_brats_case(root, f"BraTS2021_{i:05d}", rng=i)
        if i in (1, 4):  # tumour-free cases
            seg_path = folder / f"BraTS2021_{i:05d}_seg.nii.gz"
            seg = nib.load(seg_path)
            nib.save(nib.Nifti1Image(np.zeros(seg.shape, np.uint8), seg.affine), seg_path)
    return root


@pytest.fixture
def registries():
    from _bench_plugins import bench_registries

    return bench_registries()
