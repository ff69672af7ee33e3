"""Samplers: healthy-only training samples, shapes in 2D and 3D, brain filter, margin, eval masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from brats_ad.data.cache import CachedCase, write_cached_case
from brats_ad.data.samplers import (
    EvalPatchDataset,
    EvalSliceDataset,
    PatchDataset,
    SliceDataset,
    grid_starts,
)
from brats_ad.data.scan import Scan
from brats_ad.errors import ConfigError, DataError

SHAPE = (24, 20, 18)  # (X, Y, Z): non-square slices exercise the pad-to-square path
TUMOUR_Z = (8, 11)  # slices 8, 9, 10 hold tumour


def make_scan(case_id: str, *, tumour: bool = True, labelled: bool = True) -> Scan:
    rng = np.random.default_rng(abs(hash(case_id)) % 2**32)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    brain = sum(g**2 for g in grid) < 0.8  # ellipsoid: small at the top and bottom slices
    image = np.where(brain, rng.normal(size=(2, *SHAPE)), -1.0).astype(np.float32)
    seg = np.zeros(SHAPE, np.uint8)
    if tumour:
        seg[10:14, 8:12, TUMOUR_Z[0]:TUMOUR_Z[1]] = 2
    return Scan(case_id, image, ("t1", "flair"), np.eye(4), seg=seg if labelled else None, brain_mask=brain)


@pytest.fixture
def cache(tmp_path):
    for cid, kw in (("a", {}), ("b", {}), ("h", {"tumour": False})):
        write_cached_case(tmp_path, make_scan(cid, **kw), [{"name": "test"}])
    return [CachedCase(tmp_path / cid) for cid in ("a", "b", "h")]


def brain_fraction(case: CachedCase, z: int) -> float:
    return case.brain_voxels_per_slice[z] / (SHAPE[0] * SHAPE[1])


def test_training_slices_are_healthy_and_sized(cache) -> None:
    ds = SliceDataset(cache, size=16)
    assert len(ds) > 0
    for ci, z, label in ds.index:
        assert label == 0 and not (np.asarray(cache[ci].seg[z]) > 0).any()
    x = ds[0]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (2, 16, 16)
    assert torch.isfinite(x).all()
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch.shape == (4, 2, 16, 16)  # images only: no masks reach a model
    assert SliceDataset(cache, size=16, modalities=["flair"])[0].shape == (1, 16, 16)


def test_native_size_returns_the_cached_slice(tmp_path) -> None:
    scan = make_scan("sq")
    square = Scan("sq", scan.image[:, :20], scan.modalities, scan.affine, scan.seg[:20], scan.brain_mask[:20])
    case = CachedCase(write_cached_case(tmp_path, square, []))
    ds = SliceDataset([case], size=20)
    _, z, _ = ds.index[0]
    np.testing.assert_array_equal(ds[0].numpy(), case.slice(int(z)))


def test_min_brain_fraction_filters_slices(cache) -> None:
    all_slices = SliceDataset(cache[2:], size=16, min_brain_fraction=0.0)
    assert len(all_slices) == SHAPE[2]
    ds = SliceDataset(cache[2:], size=16, min_brain_fraction=0.3)
    kept = {int(z) for _, z, _ in ds.index}
    assert kept == {z for z in range(SHAPE[2]) if brain_fraction(cache[2], z) >= 0.3}
    assert 0 < len(kept) < SHAPE[2]
    with pytest.raises(ConfigError, match="min_brain_fraction"):
        SliceDataset(cache, min_brain_fraction=1.5)


def test_margin_drops_neighbouring_slices(cache) -> None:
    plain = {int(z) for ci, z, _ in SliceDataset(cache[:1], size=16, min_brain_fraction=0).index}
    wide = {int(z) for ci, z, _ in SliceDataset(cache[:1], size=16, min_brain_fraction=0, margin=2).index}
    assert plain == set(range(SHAPE[2])) - set(range(*TUMOUR_Z))
    assert wide == set(range(SHAPE[2])) - set(range(TUMOUR_Z[0] - 2, TUMOUR_Z[1] + 2))


def test_eval_slices_carry_masks_and_labels(cache) -> None:
    ds = EvalSliceDataset(cache, size=16, min_brain_fraction=0.0)
    assert len(ds) == 3 * SHAPE[2]
    labels = {(ds.cases[ci].case_id, int(z)): int(label) for ci, z, label in ds.index}
    assert labels[("a", 9)] == 1 and labels[("a", 2)] == 0 and labels[("h", 9)] == 0
    i = [k for k, (ci, z, _) in enumerate(ds.index) if ci == 0 and z == 9][0]
    item = ds[i]
    assert item["image"].shape == (2, 16, 16)
    assert item["brain_mask"].shape == (1, 16, 16) and item["brain_mask"].dtype == torch.bool
    assert item["seg"].shape == (1, 16, 16) and item["seg"].dtype == torch.uint8
    assert item["label"] == 1 and (item["seg"] > 0).any() and item["case_id"] == "a" and item["z"] == 9


def test_unlabelled_policy(tmp_path) -> None:
    case = CachedCase(write_cached_case(tmp_path, make_scan("u", labelled=False), []))
    with pytest.raises(DataError, match="case u has no segmentation.*unlabelled='healthy'"):
        SliceDataset([case], size=16)
    assert len(SliceDataset([case], size=16, unlabelled="healthy")) > 0
    assert len(SliceDataset([case], size=16, unlabelled="skip")) == 0
    item = EvalSliceDataset([case], size=16, unlabelled="healthy")[0]
    assert int(item["seg"].sum()) == 0


def test_training_patches_are_healthy(cache) -> None:
    for margin in (0, 2):
        ds = PatchDataset(cache, size=8, stride=4, min_brain_fraction=0.2, margin=margin)
        assert len(ds) > 0 and ds[0].shape == (2, 8, 8, 8)
        for ci, x, y, z, label in ds.index:
            case = cache[ci]
            lo = np.maximum(np.array([z, x, y]) - margin, 0)
            block = np.asarray(case.seg[lo[0]:z + 8 + margin, lo[1]:x + 8 + margin, lo[2]:y + 8 + margin])
            assert label == 0 and not (block > 0).any()
            brain = np.asarray(case.brain_mask[z:z + 8, x:x + 8, y:y + 8]).sum()
            assert brain >= 0.2 * 8**3
    with_margin = PatchDataset(cache, size=8, stride=4, min_brain_fraction=0.2, margin=2)
    without = PatchDataset(cache, size=8, stride=4, min_brain_fraction=0.2)
    assert len(with_margin) < len(without)


def test_patch_content_matches_the_cache(cache) -> None:
    ds = PatchDataset(cache, size=(8, 6, 4), min_brain_fraction=0.0)
    ci, x, y, z, _ = (int(v) for v in ds.index[3])
    expected = np.asarray(cache[ci].image[z:z + 4, :, x:x + 8, y:y + 6], dtype=np.float32).transpose(1, 2, 3, 0)
    np.testing.assert_array_equal(ds[3].numpy(), expected)


def test_random_patches_are_seeded_and_in_bounds(cache) -> None:
    a = PatchDataset(cache, size=8, mode="random", patches_per_case=5, seed=1)
    b = PatchDataset(cache, size=8, mode="random", patches_per_case=5, seed=1)
    c = PatchDataset(cache, size=8, mode="random", patches_per_case=5, seed=2)
    np.testing.assert_array_equal(a.index, b.index)
    assert not np.array_equal(a.index, c.index)
    assert len(a) <= 15
    corners = a.index[:, 1:4]
    assert (corners >= 0).all() and (corners + 8 <= np.array(SHAPE)).all()


def test_eval_patches_tile_the_volume(cache) -> None:
    ds = EvalPatchDataset(cache[:1], size=8)
    covered = np.zeros(SHAPE, bool)
    for i in range(len(ds)):
        item = ds[i]
        x, y, z = item["corner"].tolist()
        covered[x:x + 8, y:y + 8, z:z + 8] = True
        assert item["image"].shape == (2, 8, 8, 8) and item["seg"].shape == (1, 8, 8, 8)
        assert item["label"] == int((item["seg"] > 0).any())
    assert covered.all()
    assert any(ds[i]["label"] for i in range(len(ds)))


def test_grid_starts() -> None:
    assert grid_starts(18, 8, 8) == [0, 8, 10]
    assert grid_starts(16, 8, 8) == [0, 8]
    with pytest.raises(DataError, match="larger than the case grid"):
        grid_starts(6, 8, 8)


def test_dataloader_worker_reads(cache) -> None:
    ds = SliceDataset(cache, size=16)
    _ = ds[0]  # maps opened in the parent must not leak into the worker
    loader = DataLoader(ds, batch_size=len(ds), num_workers=1)
    batch = next(iter(loader))
    expected = torch.stack([ds[i] for i in range(len(ds))])
    torch.testing.assert_close(batch, expected)


def test_resized_cache_matches_resizing_on_read_and_is_written_once(cache) -> None:
    from brats_ad.data.samplers import resized_file

    fast = SliceDataset(cache, size=16)
    exact = SliceDataset(cache, size=16, resized_cache=False)
    for i in range(0, len(fast), 5):
        torch.testing.assert_close(fast[i], exact[i], rtol=0, atol=2e-3)  # float16 rounding
    assert (cache[0].path / resized_file(16)).is_file()
    stamp = (cache[0].path / resized_file(16)).stat().st_mtime_ns
    assert SliceDataset(cache, size=16, modalities=["flair"])[0].shape == (1, 16, 16)
    assert (cache[0].path / resized_file(16)).stat().st_mtime_ns == stamp  # reused, not rewritten
    batch = next(iter(DataLoader(fast, batch_size=4, num_workers=1)))
    assert batch.shape == (4, 2, 16, 16)
