"""The embedded synthetic dataset: layout, determinism, labels, resumability and realism."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brats_ad.data import synthetic
from brats_ad.data.synthetic import (
    MANIFEST,
    SyntheticDataset,
    case_id,
    generate_case,
    healthy_flags,
    write_synthetic_dataset,
)
from brats_ad.errors import ConfigError, DataError

import nibabel as nib

AFFINE_2021 = np.array([[-1, 0, 0, 0], [0, -1, 0, 239], [0, 0, 1, 0], [0, 0, 0, 1]], float)
FILES = ("t1", "t1ce", "t2", "flair", "seg")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three cases (index 0 healthy with this seed and fraction), made with the network blocked."""
    out = tmp_path_factory.mktemp("synthetic")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("synthetic generation tried to open a network connection")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        write_synthetic_dataset(out, 3, 0, healthy_fraction=1 / 3, progress=False)
    return out


@pytest.fixture(scope="module")
def case1() -> synthetic.SyntheticCase:
    """Case 1 of seed 0 (a tumour case), regenerated in memory."""
    return generate_case(0, 1, healthy=False)


def _load(folder: Path, name: str) -> np.ndarray:
    return np.asanyarray(nib.load(folder / f"{folder.name}_{name}.nii.gz").dataobj)


def _best_dice(values: np.ndarray, target: np.ndarray) -> float:
    """Oracle Dice of ``values > t`` over every threshold t (sort once, cumulate hits)."""
    order = np.argsort(-values, kind="stable")
    hits = np.cumsum(target[order])
    predicted = np.arange(1, values.size + 1)
    return float((2 * hits / (predicted + target.sum())).max())


def _flair_best_dice(case: synthetic.SyntheticCase) -> float:
    flair = case.images["flair"].astype(np.float64)
    brain = case.brain_mask
    z = (flair[brain] - flair[brain].mean()) / flair[brain].std()
    return _best_dice(z, case.seg[brain] > 0)


def test_layout_and_manifest(written: Path) -> None:
    names = sorted(p.name for p in written.iterdir())
    assert names == ["BraTS2021_90000", "BraTS2021_90001", "BraTS2021_90002", MANIFEST]
    for i in range(3):
        folder = written / case_id(i)
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            f"{folder.name}_{name}.nii.gz" for name in FILES
        )
    manifest = json.loads((written / MANIFEST).read_text())
    assert manifest["seed"] == 0 and manifest["generator_version"] == synthetic.GENERATOR_VERSION
    assert [row["case_id"] for row in manifest["cases"]] == [case_id(i) for i in range(3)]
    assert [row["healthy"] for row in manifest["cases"]] == healthy_flags(3, 0, 1 / 3)


def test_case_ids_parse_like_brats2021() -> None:
    assert case_id(0) == "BraTS2021_90000" and case_id(123) == "BraTS2021_90123"


def test_shapes_affine_dtypes(written: Path) -> None:
    folder = written / case_id(1)
    for name in FILES:
        image = nib.load(folder / f"{folder.name}_{name}.nii.gz")
        assert image.shape == (240, 240, 155)
        np.testing.assert_allclose(image.affine, AFFINE_2021)
        assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
        assert image.header.get_zooms() == (1.0, 1.0, 1.0)
        assert image.get_data_dtype() == (np.uint8 if name == "seg" else np.int16)


def test_labels_and_healthy_cases(written: Path) -> None:
    manifest = json.loads((written / MANIFEST).read_text())
    healthy = {row["case_id"]: row["healthy"] for row in manifest["cases"]}
    assert sorted(healthy.values()) == [False, False, True]
    for cid, is_healthy in healthy.items():
        seg = _load(written / cid, "seg")
        if is_healthy:
            assert not seg.any()
        else:
            assert set(np.unique(seg).tolist()) == {0, 1, 2, 4}
        flair = _load(written / cid, "flair")
        assert (flair[seg > 0] > 0).all(), "tumour must lie inside the skull-stripped brain"


def test_same_seed_gives_identical_arrays(written: Path, case1: synthetic.SyntheticCase) -> None:
    for name in FILES:
        on_disk = _load(written / case_id(1), name)
        in_memory = case1.seg if name == "seg" else case1.images[name]
        assert on_disk.dtype == in_memory.dtype
        assert np.array_equal(on_disk, in_memory), name


def test_other_seed_gives_other_case(case1: synthetic.SyntheticCase) -> None:
    other = generate_case(1, 1, healthy=False)
    assert not np.array_equal(other.images["t1"], case1.images["t1"])
    assert not np.array_equal(other.seg, case1.seg)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.4, 1.0])
def test_healthy_fraction_holds_for_every_prefix(fraction: float) -> None:
    flags = healthy_flags(40, 3, fraction)
    for n in range(1, 41):
        assert abs(sum(flags[:n]) - n * fraction) < 1.0
    assert healthy_flags(10, 3, fraction) == flags[:10], "a flag must not depend on the case count"


def test_resume_skips_present_cases(written: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake(seed: int, index: int, healthy: bool) -> synthetic.SyntheticCase:
        calls.append(index)
        zeros = np.zeros(synthetic.SHAPE, np.int16)
        return synthetic.SyntheticCase(
            case_id(index), {m: zeros for m in FILES[:4]}, np.zeros(synthetic.SHAPE, np.uint8),
            zeros > 0, np.zeros(synthetic.SHAPE, np.uint8), healthy,
        )

    monkeypatch.setattr(synthetic, "generate_case", fake)
    before = (written / case_id(1) / f"{case_id(1)}_t1.nii.gz").stat().st_mtime_ns
    assert write_synthetic_dataset(written, 3, 0, healthy_fraction=1 / 3, progress=False) == [
        written / case_id(i) for i in range(3)
    ]
    assert calls == []
    assert (written / case_id(1) / f"{case_id(1)}_t1.nii.gz").stat().st_mtime_ns == before

    # An incomplete folder (a file lost) is regenerated; the others are left alone.
    copy = written.parent / "resume-copy"
    import shutil

    shutil.copytree(written, copy)
    (copy / case_id(2) / f"{case_id(2)}_t2.nii.gz").unlink()
    write_synthetic_dataset(copy, 4, 0, healthy_fraction=1 / 3, progress=True)
    assert calls == [2, 3]
    assert not list(copy.glob(".tmp-*"))
    manifest = json.loads((copy / MANIFEST).read_text())
    assert [row["case_id"] for row in manifest["cases"]] == [case_id(i) for i in range(4)]


def test_other_seed_in_same_folder_is_refused(written: Path) -> None:
    with pytest.raises(DataError, match=r"seed=0.*asks for 7"):
        write_synthetic_dataset(written, 3, 7, healthy_fraction=1 / 3, progress=False)


def test_unmanaged_case_folders_are_refused(tmp_path: Path) -> None:
    (tmp_path / "BraTS2021_00001").mkdir()
    with pytest.raises(DataError, match="no synthetic.json"):
        write_synthetic_dataset(tmp_path, 1, 0, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cases": 0}, "cases must be an integer"),
        ({"seed": -1}, "seed must be a non-negative"),
        ({"healthy_fraction": 1.5}, "healthy_fraction must be in"),
        ({"modalities": ("flair", "dwi")}, "unknown modality 'dwi'"),
    ],
)
def test_bad_parameters(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SyntheticDataset(tmp_path, **kwargs)


def test_dataset_plugin_lists_cases(written: Path) -> None:
    dataset = SyntheticDataset(written, modalities=("t2f", "t1"), cases=3, seed=0,
                               healthy_fraction=1 / 3, progress=False)
    cases = dataset.cases()
    assert dataset.name == "synthetic"
    assert [c.case_id for c in cases] == [case_id(i) for i in range(3)]
    first = cases[0]
    assert first.modalities == ("flair", "t1") and first.dataset == "synthetic"
    assert first.images["flair"] == written / case_id(0) / f"{case_id(0)}_flair.nii.gz"
    assert first.seg is not None and first.seg.is_file()
    assert dataset.healthy_case_ids() == [c for c, h in zip(map(case_id, range(3)),
                                                           healthy_flags(3, 0, 1 / 3)) if h]


def test_brats_discovery_reads_the_folder(written: Path) -> None:
    from brats_ad.data import brats
    dataset = brats.BratsDataset(written, modalities=("t1", "t1ce", "t2", "flair"), require_seg=True)
    found = dataset.cases()
    assert [c.case_id for c in found] == [case_id(i) for i in range(3)]
    assert all(c.naming == "brats2021" for c in found)


def test_registered_as_dataset_plugin() -> None:
    from brats_ad.plugins import get_registries

    entry = get_registries().datasets.get("synthetic")
    assert entry.load() is SyntheticDataset


def test_import_is_light() -> None:
    code = (
        "import sys, brats_ad.data.synthetic; "
        "print(sorted(m for m in ('torch', 'nilearn', 'scipy', 'nibabel') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_tissue_contrasts_are_plausible(case1: synthetic.SyntheticCase) -> None:
    normal = case1.seg == 0
    mean = {
        m: {t: float(img[normal & (case1.tissue == code)].mean()) for t, code in
            (("csf", 1), ("gm", 2), ("wm", 3))}
        for m, img in case1.images.items()
    }
    assert mean["t1"]["wm"] > mean["t1"]["gm"] > mean["t1"]["csf"]
    assert mean["t1ce"]["wm"] > mean["t1ce"]["gm"] > mean["t1ce"]["csf"]
    assert mean["t2"]["csf"] > mean["t2"]["gm"] > mean["t2"]["wm"]
    assert mean["flair"]["gm"] > mean["flair"]["wm"] > mean["flair"]["csf"]


def test_tumour_contrasts_are_plausible(case1: synthetic.SyntheticCase) -> None:
    seg, brain = case1.seg, case1.brain_mask
    flair, t1ce = case1.images["flair"].astype(float), case1.images["t1ce"].astype(float)
    assert flair[seg == 2].mean() > flair[brain & (seg == 0)].mean()
    assert t1ce[seg == 4].mean() > t1ce[brain & (seg == 0)].mean()
    assert t1ce[seg == 4].mean() > t1ce[seg == 1].mean()
    dice = _flair_best_dice(case1)
    assert 0.2 < dice < 0.95, f"FLAIR thresholding should be good but imperfect, got Dice {dice:.3f}"


@pytest.mark.slow
def test_flair_threshold_is_imperfect_over_cases() -> None:
    """Several tumour cases: a FLAIR threshold finds tumours (Dice ~0.5-0.85), never perfectly."""
    dice = [_flair_best_dice(generate_case(5, i, healthy=False)) for i in range(5)]
    assert max(dice) < 0.95, dice
    assert 0.45 < float(np.mean(dice)) < 0.9, dice
