"""Write tiny NIfTI cases in BraTS 2021 / 2023 naming and IXI-like healthy scans, for tests.

Importable by any test (``from _data_factories import write_brats_case`` with pytest's default
import mode, or through the fixtures in ``tests/data/conftest.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import nibabel as nib
import numpy as np

from brats_ad.data.scan import MODALITIES, canonical_modality

#: Canonical modality -> file token, per naming ("2021" / "2023").
TOKENS = {
    "2021": {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair"},
    "2023": {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"},
}
SEPARATOR = {"2021": "_", "2023": "-"}
DEFAULT_ID = {"2021": "BraTS2021_00000", "2023": "BraTS-GLI-00000-000"}
LABELS = {"2021": (1, 2, 4), "2023": (1, 2, 3)}


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save ``data`` as NIfTI (.nii or .nii.gz by the name) with a 1 mm identity affine by default."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def brain_volume(shape: tuple[int, int, int], rng: np.random.Generator, background: float = 0.0) -> np.ndarray:
    """An ellipsoid 'brain' of noisy intensities on a constant background (0 = skull-stripped)."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum(g**2 for g in grid) < 0.7
    vol = np.full(shape, background, dtype=np.float32)
    vol[inside] = rng.normal(500.0, 60.0, size=int(inside.sum()))
    return vol


def brats_file_name(case_id: str, naming: str, role: str, ext: str = ".nii.gz") -> str:
    """``BraTS2021_00000_flair.nii.gz`` / ``BraTS-GLI-00000-000-t2f.nii.gz`` for a canonical role."""
    token = "seg" if role == "seg" else TOKENS[naming][canonical_modality(role)]
    return f"{case_id}{SEPARATOR[naming]}{token}{ext}"


def write_brats_case(
    root: Path,
    case_id: str | None = None,
    naming: str = "2021",
    shape: tuple[int, int, int] = (24, 24, 16),
    modalities: Iterable[str] = MODALITIES,
    with_seg: bool = True,
    rng: np.random.Generator | int | None = 0,
    ext: str = ".nii.gz",
    affine: np.ndarray | None = None,
) -> Path:
    """Write one skull-stripped case (int16 images, uint8 seg with a lesion); return its folder."""
    if naming not in TOKENS:
        raise ValueError(f"naming must be '2021' or '2023', got {naming!r}")
    rng = np.random.default_rng(rng)
    case_id = case_id or DEFAULT_ID[naming]
    folder = Path(root) / case_id
    folder.mkdir(parents=True, exist_ok=True)
    for modality in modalities:
        vol = brain_volume(shape, rng).astype(np.int16)
        write_nifti(folder / brats_file_name(case_id, naming, modality, ext), vol, affine)
    if with_seg:
        seg = np.zeros(shape, dtype=np.uint8)
        cx, cy, cz = (n // 2 for n in shape)
        labels = LABELS[naming]
        seg[cx - 4 : cx + 4, cy - 4 : cy + 4, cz - 3 : cz + 3] = labels[1]  # oedema
        seg[cx - 2 : cx + 2, cy - 2 : cy + 2, cz - 2 : cz + 2] = labels[2]  # enhancing
        seg[cx - 1 : cx + 1, cy - 1 : cy + 1, cz - 1 : cz + 1] = labels[0]  # core
        write_nifti(folder / brats_file_name(case_id, naming, "seg", ext), seg, affine)
    return folder


def write_healthy_subject(
    root: Path,
    subject: str = "IXI002-Guys-0828",
    modalities: Iterable[str] = ("T1",),
    pattern: str = "{subject}-{modality}.nii.gz",
    shape: tuple[int, int, int] = (24, 24, 16),
    rng: np.random.Generator | int | None = 0,
) -> list[Path]:
    """Write raw (not skull-stripped: non-zero background) scans named by ``pattern``."""
    rng = np.random.default_rng(rng)
    paths = []
    for spelling in modalities:
        rel = pattern.replace("{subject}", subject).replace("{modality}", spelling)
        vol = brain_volume(shape, rng, background=40.0)
        vol += rng.normal(0.0, 5.0, size=shape).astype(np.float32)  # scanner noise around the head
        paths.append(write_nifti(Path(root) / rel, vol.astype(np.int16)))
    return paths
