"""Torch datasets over the cache: 2D axial slices and 3D patches, healthy-only for training.

Training datasets (:class:`SliceDataset`, :class:`PatchDataset`) yield image tensors only: masks
pick the samples but never reach a model. Evaluation datasets (:class:`EvalSliceDataset`,
:class:`EvalPatchDataset`) yield a dict with ``image``, ``brain_mask``, ``seg``, ``label`` and
where the sample came from.

The index of samples is built from ``meta.json`` counts (slices) or one pass over the brain
mask / seg (patches), then each item is one memory-mapped read. Memory maps open lazily in each
DataLoader worker (a pickled :class:`~brats_ad.data.cache.CachedCase` carries no open maps).

Choices, stated once:

* **Brain filter** -- a slice is kept when its brain voxels are at least ``min_brain_fraction``
  (default 0.1) of the slice area of the cached grid, i.e. ~3,700 voxels on the default
  192 x 192 grid (a ~60 mm x 60 mm section): the thin caps of the brain, mostly partial-volume
  edge, are dropped. A patch is kept when at least ``min_brain_fraction`` (default 0.25) of its
  voxels are brain.
* **Healthy** -- no tumour voxel (``seg > 0``) in the sample, nor within ``margin`` voxels of it
  (for slices: within ``margin`` neighbouring slices). Unlabelled cases (no seg) are an error by
  default; ``unlabelled="healthy"`` treats them as tumour-free (healthy-control scans) and
  ``"skip"`` leaves them out.
* **2D geometry** -- the whole slice is padded to a square (edge values, so the background stays
  background) and resized to ``size`` x ``size`` (bilinear; masks nearest). Not cropped to each
  slice's brain: one fixed scale for every slice keeps lesion sizes comparable and lets a map go
  back to the cache grid with one transform. Prepare with a pipeline whose crop-pad shape equals
  ``size`` to skip resizing altogether (the fastest path).
* **3D geometry** -- patches are cut at cache resolution, no resizing; positions lie on a grid
  (``stride``, default = ``size``, with a last position flush with the far edge so the volume is
  covered) or are drawn at random (seeded, drawn once when the dataset is built).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from brats_ad.data.cache import CachedCase
from brats_ad.errors import ConfigError, DataError

DEFAULT_SLICE_SIZE = 128
DEFAULT_PATCH_SIZE = 64
DEFAULT_SLICE_MIN_BRAIN = 0.1
DEFAULT_PATCH_MIN_BRAIN = 0.25
_UNLABELLED = ("error", "skip", "healthy")


def _open_cases(cases: Sequence[CachedCase | str | Path]) -> list[CachedCase]:
    out = [c if isinstance(c, CachedCase) else CachedCase(c) for c in cases]
    if not out:
        raise DataError("no cached cases given to the sampler; run 'brats-ad prepare' and pass the cases")
    return out


def _check_common(min_brain_fraction: float, margin: int, unlabelled: str) -> None:
    if not 0.0 <= float(min_brain_fraction) <= 1.0:
        raise ConfigError(f"min_brain_fraction must be in [0, 1], got {min_brain_fraction!r}")
    if int(margin) != margin or margin < 0:
        raise ConfigError(f"margin must be a whole number of voxels >= 0, got {margin!r}")
    if unlabelled not in _UNLABELLED:
        raise ConfigError(f"unlabelled must be one of {', '.join(_UNLABELLED)}, got {unlabelled!r}")


def _labelled(case: CachedCase, unlabelled: str) -> bool:
    """Whether to use the case; raises for an unlabelled case under the default policy."""
    if case.has_seg or unlabelled == "healthy":
        return True
    if unlabelled == "skip":
        return False
    raise DataError(
        f"case {case.case_id} has no segmentation, so its healthy samples cannot be told apart; "
        "pass unlabelled='healthy' for healthy-control scans or unlabelled='skip'"
    )


# -- 2D slices -------------------------------------------------------------------------------------
def slice_index(
    cases: Sequence[CachedCase],
    *,
    min_brain_fraction: float = DEFAULT_SLICE_MIN_BRAIN,
    margin: int = 0,
    healthy_only: bool = True,
    unlabelled: str = "error",
) -> np.ndarray:
    """Rows ``(case index, z, label)`` (label 1: slice has tumour) from meta counts alone."""
    _check_common(min_brain_fraction, margin, unlabelled)
    rows = []
    for ci, case in enumerate(cases):
        if not _labelled(case, unlabelled):
            continue
        x, y, _ = case.spatial_shape
        brain = case.brain_voxels_per_slice
        tumour = case.tumour_voxels_per_slice
        tumour_slice = np.zeros(len(brain), bool) if tumour is None else tumour > 0
        near = tumour_slice
        if margin and tumour_slice.any():  # dilate along z by `margin` slices
            near = np.convolve(tumour_slice.astype(int), np.ones(2 * margin + 1, int), mode="same") > 0
        keep = brain >= min_brain_fraction * x * y
        if healthy_only:
            keep &= ~near
        for z in np.flatnonzero(keep):
            rows.append((ci, int(z), int(tumour_slice[z])))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


class _SliceBase(Dataset):
    def __init__(
        self,
        cases: Sequence[CachedCase | str | Path],
        *,
        size: int = DEFAULT_SLICE_SIZE,
        modalities: Sequence[str] | None = None,
        min_brain_fraction: float = DEFAULT_SLICE_MIN_BRAIN,
        margin: int = 0,
        unlabelled: str = "error",
        healthy_only: bool,
        resized_cache: bool = True,
    ) -> None:
        if int(size) != size or size < 8:
            raise ConfigError(f"size must be an integer >= 8 pixels, got {size!r}")
        self.size = int(size)
        self.resized_cache = bool(resized_cache)
        self._resized: dict[int, np.ndarray | None] = {}
        self.cases = _open_cases(cases)
        self.channels = [c.channels(modalities) for c in self.cases]
        self.modalities = tuple(modalities) if modalities is not None else self.cases[0].modalities
        self.index = slice_index(
            self.cases, min_brain_fraction=min_brain_fraction, margin=int(margin),
            healthy_only=healthy_only, unlabelled=unlabelled,
        )

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_resized"] = {}  # memory maps reopen in each DataLoader worker
        return state

    def _image(self, ci: int, z: int) -> torch.Tensor:
        case, channels = self.cases[ci], self.channels[ci]
        resized = self._resized_slices(ci)
        if resized is not None:  # already at size: a read and a cast, no resize
            block = resized[z]
            arr = np.array(block) if len(channels) == block.shape[0] else block[channels]
            return torch.from_numpy(arr).float()
        block = case.image[z]  # (C, X, Y) float16 memmap view: one contiguous read
        arr = np.array(block) if len(channels) == block.shape[0] else block[channels]
        return self._fit(torch.from_numpy(arr).float(), "bilinear")

    def _resized_slices(self, ci: int) -> np.ndarray | None:
        """``(Z, C, size, size)`` float16 memory map of the case's slices resized once, or None.

        Resizing is ~80% of the cost of a slice read (a 4 x 192^2 bilinear resize takes ~0.4 ms
        on one core, the read ~0.03 ms), so each case is resized once, as a batch, into
        ``image_<size>px.npy`` beside its cache arrays (atomic rename; a cache re-prepare
        replaces the folder and so drops it). Values are those of :meth:`_fit` rounded to
        float16 like the cache itself. None when not needed or the folder is read-only (the
        slice is then resized on every read).
        """
        if ci in self._resized:
            return self._resized[ci]
        case = self.cases[ci]
        x, y, _ = case.spatial_shape
        arr = None
        if self.resized_cache and not x == y == self.size:
            path = case.path / resized_file(self.size)
            try:
                if not path.is_file():
                    _write_resized(path, case.image, self._fit)
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
                if arr.shape != (case.num_slices, len(case.modalities), self.size, self.size):
                    arr = None
            except (OSError, ValueError):
                arr = None
        self._resized[ci] = arr
        return arr

    def _fit(self, t: torch.Tensor, mode: str) -> torch.Tensor:
        return fit_slice(t, self.size, mode)


def fit_slice(t: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """(C, X, Y) -> (C, size, size): pad to a square (edge values for images, zeros for masks),
    then resize (bilinear for images, nearest for masks). Training slices, evaluation slices and
    whole-volume inference all go through this one function, so their grids agree."""
    x, y = t.shape[-2:]
    if x == y == size:
        return t
    if mode != "bilinear":
        t = t.float()
    if x != y:
        d = abs(x - y)
        pad = (d // 2, d - d // 2, 0, 0) if x > y else (0, 0, d // 2, d - d // 2)
        t = F.pad(t[None], pad, mode="replicate")[0] if mode == "bilinear" else F.pad(t, pad)
    if t.shape[-1] == size:
        return t
    if mode == "bilinear":
        return F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    return F.interpolate(t[None], size=(size, size), mode="nearest-exact")[0]


def resized_file(size: int) -> str:
    """Name of the per-case file of slices resized to ``size`` x ``size`` (see ``_SliceBase``)."""
    return f"image_{int(size)}px.npy"


def _write_resized(path: Path, image: np.ndarray, fit: Any, batch: int = 32) -> None:
    """Resize every axial slice of a (Z, C, X, Y) cache image with ``fit``; write atomically."""
    import os
    import uuid

    z, c = image.shape[:2]
    out: np.ndarray | None = None
    for start in range(0, z, batch):
        block = torch.from_numpy(np.asarray(image[start:start + batch], dtype=np.float32))
        n = len(block)
        # pad + resize act per channel: slices x channels as one stack, one interpolate call
        resized = fit(block.reshape(n * c, *block.shape[-2:]), "bilinear")
        resized = resized.reshape(n, c, *resized.shape[-2:])
        if out is None:
            out = np.empty((z, c, *resized.shape[-2:]), dtype=np.float16)
        out[start:start + n] = resized.numpy()
    tmp = path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, out, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class SliceDataset(_SliceBase):
    """Healthy axial slices for training: ``dataset[i]`` is a float32 tensor (C, size, size).

    ``resized_cache`` (default on): slices of a case whose grid is not ``size`` x ``size`` are
    resized once per case into a file beside its cache arrays and read from there (~5x faster
    reads; values rounded to float16). Off: resized on every read, exact float32.
    """

    def __init__(
        self,
        cases: Sequence[CachedCase | str | Path],
        *,
        size: int = DEFAULT_SLICE_SIZE,
        modalities: Sequence[str] | None = None,
        min_brain_fraction: float = DEFAULT_SLICE_MIN_BRAIN,
        margin: int = 0,
        unlabelled: str = "error",
        resized_cache: bool = True,
    ) -> None:
        super().__init__(cases, size=size, modalities=modalities, min_brain_fraction=min_brain_fraction,
                         margin=margin, unlabelled=unlabelled, healthy_only=True, resized_cache=resized_cache)

    def __getitem__(self, i: int) -> torch.Tensor:
        ci, z, _ = self.index[i]
        return self._image(int(ci), int(z))


class EvalSliceDataset(_SliceBase):
    """Every brain slice, tumour or not, with its masks (for scoring and metrics).

    ``dataset[i]`` -> ``{"image": (C, S, S) float32, "brain_mask": (1, S, S) bool,
    "seg": (1, S, S) uint8 labels (0 for an unlabelled case taken as healthy), "label": 0/1,
    "case_id": str, "z": int}``. Images are resized on every read (exact, as in inference)
    unless ``resized_cache`` (see :class:`SliceDataset`).
    """

    def __init__(
        self,
        cases: Sequence[CachedCase | str | Path],
        *,
        size: int = DEFAULT_SLICE_SIZE,
        modalities: Sequence[str] | None = None,
        min_brain_fraction: float = DEFAULT_SLICE_MIN_BRAIN,
        unlabelled: str = "error",
        resized_cache: bool = False,
    ) -> None:
        super().__init__(cases, size=size, modalities=modalities, min_brain_fraction=min_brain_fraction,
                         margin=0, unlabelled=unlabelled, healthy_only=False, resized_cache=resized_cache)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ci, z, label = (int(v) for v in self.index[i])
        case = self.cases[ci]
        mask = torch.from_numpy(np.array(case.brain_mask[z]))[None]
        seg_map = case.seg
        seg = torch.zeros_like(mask, dtype=torch.uint8) if seg_map is None else torch.from_numpy(np.array(seg_map[z]))[None]
        return {
            "image": self._image(ci, z),
            "brain_mask": self._fit(mask, "nearest") > 0.5,
            "seg": self._fit(seg, "nearest").round().to(torch.uint8),
            "label": label,
            "case_id": case.case_id,
            "z": z,
        }


# -- 3D patches ------------------------------------------------------------------------------------
def _triple(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    t = (int(value),) * 3 if np.isscalar(value) else tuple(int(v) for v in value)  # type: ignore[arg-type]
    if len(t) != 3 or min(t) < 1:
        raise ConfigError(f"{name} must be a positive int or 3 positive ints, got {value!r}")
    return t  # type: ignore[return-value]


def grid_starts(length: int, size: int, stride: int) -> list[int]:
    """Starts covering ``[0, length)``: every ``stride``, plus one flush with the far edge."""
    if size > length:
        raise DataError(f"patch size {size} is larger than the case grid ({length} voxels); lower the patch size")
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def _summed_volume(vol: np.ndarray) -> np.ndarray:
    """Summed-volume table with a zero border: any box sum in 8 lookups (vectorised below)."""
    s = np.zeros(tuple(n + 1 for n in vol.shape), dtype=np.int64)
    s[1:, 1:, 1:] = vol.astype(np.int64).cumsum(0).cumsum(1).cumsum(2)
    return s


def _box_sums(sat: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sums over boxes ``[lo, hi)`` (rows of (a, b, c) indices into the table's volume)."""
    shape = np.asarray(sat.shape) - 1
    lo, hi = np.clip(lo, 0, shape), np.clip(hi, 0, shape)
    total = np.zeros(len(lo), dtype=np.int64)
    for corner in np.ndindex(2, 2, 2):
        idx = tuple(np.where(corner[d], hi[:, d], lo[:, d]) for d in range(3))
        total += (-1) ** (3 - sum(corner)) * sat[idx]
    return total


def patch_index(
    cases: Sequence[CachedCase],
    *,
    size: int | Sequence[int] = DEFAULT_PATCH_SIZE,
    stride: int | Sequence[int] | None = None,
    mode: str = "grid",
    patches_per_case: int = 16,
    seed: int = 0,
    min_brain_fraction: float = DEFAULT_PATCH_MIN_BRAIN,
    margin: int = 0,
    healthy_only: bool = True,
    unlabelled: str = "error",
) -> np.ndarray:
    """Rows ``(case index, x0, y0, z0, label)`` (label 1: patch has tumour)."""
    _check_common(min_brain_fraction, margin, unlabelled)
    if mode not in ("grid", "random"):
        raise ConfigError(f"mode must be 'grid' or 'random', got {mode!r}")
    sx, sy, sz = _triple(size, "size")
    stride_t = (sx, sy, sz) if stride is None else _triple(stride, "stride")
    rows: list[np.ndarray] = []
    for ci, case in enumerate(cases):
        if not _labelled(case, unlabelled):
            continue
        X, Y, Z = case.spatial_shape
        if mode == "grid":
            gx, gy, gz = (grid_starts(n, s, st) for n, s, st in zip((X, Y, Z), (sx, sy, sz), stride_t))
            corners = np.stack(np.meshgrid(gx, gy, gz, indexing="ij"), -1).reshape(-1, 3)
        else:
            rng = np.random.default_rng([seed, ci])
            highs = [n - s + 1 for n, s in zip((X, Y, Z), (sx, sy, sz))]
            if min(highs) < 1:
                raise DataError(f"case {case.case_id}: patch {(sx, sy, sz)} larger than grid {(X, Y, Z)}; lower size")
            corners = np.stack([rng.integers(0, h, size=patches_per_case * 20) for h in highs], -1)
        # memmaps are (Z, X, Y): reorder corners to (z, x, y) for the tables
        zxy = corners[:, [2, 0, 1]]
        ext = np.array([sz, sx, sy])
        brain = _box_sums(_summed_volume(np.asarray(case.brain_mask)), zxy, zxy + ext)
        keep = brain >= min_brain_fraction * sx * sy * sz
        labels = np.zeros(len(corners), dtype=np.int64)
        counts = case.tumour_voxels_per_slice
        if counts is not None and counts.any():
            tumour_sat = _summed_volume(np.asarray(case.seg) > 0)
            labels = (_box_sums(tumour_sat, zxy, zxy + ext) > 0).astype(np.int64)
            if healthy_only:
                near = _box_sums(tumour_sat, zxy - margin, zxy + ext + margin) > 0
                keep &= ~near
        chosen = np.flatnonzero(keep)
        if mode == "random":
            chosen = chosen[:patches_per_case]
        rows.append(np.column_stack([np.full(len(chosen), ci), corners[chosen], labels[chosen]]))
    return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 5), np.int64)


class _PatchBase(Dataset):
    def __init__(self, cases, *, size, modalities, healthy_only, **index_kwargs) -> None:
        self.size = _triple(size, "size")
        self.cases = _open_cases(cases)
        self.channels = [c.channels(modalities) for c in self.cases]
        self.modalities = tuple(modalities) if modalities is not None else self.cases[0].modalities
        self.index = patch_index(self.cases, size=self.size, healthy_only=healthy_only, **index_kwargs)

    def __len__(self) -> int:
        return len(self.index)

    def _image(self, ci: int, corner: Sequence[int]) -> torch.Tensor:
        case, channels = self.cases[ci], self.channels[ci]
        (x0, y0, z0), (sx, sy, sz) = corner, self.size
        block = case.image[z0:z0 + sz, :, x0:x0 + sx, y0:y0 + sy]  # (Z, C, X, Y) float16 view
        arr = np.array(block) if len(channels) == block.shape[1] else block[:, channels]
        # (Z, C, X, Y) -> (C, X, Y, Z): torch's permuted copy is ~25% faster than numpy's here
        return torch.from_numpy(arr).float().permute(1, 2, 3, 0).contiguous()


class PatchDataset(_PatchBase):
    """Healthy 3D patches for training: ``dataset[i]`` is a float32 tensor (C, X, Y, Z)."""

    def __init__(
        self,
        cases: Sequence[CachedCase | str | Path],
        *,
        size: int | Sequence[int] = DEFAULT_PATCH_SIZE,
        stride: int | Sequence[int] | None = None,
        mode: str = "grid",
        patches_per_case: int = 16,
        seed: int = 0,
        modalities: Sequence[str] | None = None,
        min_brain_fraction: float = DEFAULT_PATCH_MIN_BRAIN,
        margin: int = 0,
        unlabelled: str = "error",
    ) -> None:
        super().__init__(cases, size=size, modalities=modalities, healthy_only=True, stride=stride,
                         mode=mode, patches_per_case=patches_per_case, seed=seed,
                         min_brain_fraction=min_brain_fraction, margin=margin, unlabelled=unlabelled)

    def __getitem__(self, i: int) -> torch.Tensor:
        ci, x, y, z, _ = (int(v) for v in self.index[i])
        return self._image(ci, (x, y, z))


class EvalPatchDataset(_PatchBase):
    """Grid patches covering each case, tumour or not, with masks.

    ``dataset[i]`` -> ``{"image": (C, X, Y, Z) float32, "brain_mask": (1, X, Y, Z) bool,
    "seg": (1, X, Y, Z) uint8, "label": 0/1, "case_id": str, "corner": (x0, y0, z0) tensor}``.
    ``min_brain_fraction`` defaults to 0 here: keep every patch so maps tile whole volumes.
    """

    def __init__(
        self,
        cases: Sequence[CachedCase | str | Path],
        *,
        size: int | Sequence[int] = DEFAULT_PATCH_SIZE,
        stride: int | Sequence[int] | None = None,
        modalities: Sequence[str] | None = None,
        min_brain_fraction: float = 0.0,
        unlabelled: str = "error",
    ) -> None:
        super().__init__(cases, size=size, modalities=modalities, healthy_only=False, stride=stride,
                         mode="grid", min_brain_fraction=min_brain_fraction, margin=0,
                         unlabelled=unlabelled)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ci, x, y, z, label = (int(v) for v in self.index[i])
        case = self.cases[ci]
        mask = case.mask_patch((x, y, z), self.size)
        seg = case.mask_patch((x, y, z), self.size, seg=True) if case.has_seg else np.zeros(mask.shape, np.uint8)
        return {
            "image": self._image(ci, (x, y, z)),
            "brain_mask": torch.from_numpy(np.ascontiguousarray(mask))[None],
            "seg": torch.from_numpy(np.ascontiguousarray(seg))[None],
            "label": label,
            "case_id": case.case_id,
            "corner": torch.tensor([x, y, z]),
        }
