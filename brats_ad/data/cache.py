"""The on-disk cache of preprocessed cases: written once by ``prepare``, read by every sampler.

Layout (one folder per pipeline, so changing a step never mixes old and new arrays)::

    <cache_root>/<pipeline_hash>/<case_id>/
        image.npy        float16 (Z, C, X, Y)  slice-major: an axial slice is one contiguous read
        brain_mask.npy   bool    (Z, X, Y)
        seg.npy          uint8   (Z, X, Y)     only when the case has a segmentation
        meta.json        provenance + per-slice brain / tumour voxel counts

A case is written into a hidden temp folder in the same parent and then renamed into place, so a
case folder exists only when complete; an interrupted write leaves at most a ``.tmp-*`` folder,
which readers ignore and :func:`clean_temp_dirs` removes. ``meta.json`` is written last inside the
temp folder and is what marks a case complete.

Arrays are opened with ``np.load(mmap_mode="r", allow_pickle=False)``: no pickle, no full read.
This module must not import torch (``brats-ad prepare`` runs without it); it uses torch's
float16 cast only when the process has already imported it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from brats_ad import __version__
from brats_ad.data.scan import Case, Scan
from brats_ad.errors import DataError
from brats_ad.io import jsonable

#: Bumped whenever the layout or meta schema changes; older entries are then stale.
CACHE_FORMAT_VERSION = 1

IMAGE_FILE = "image.npy"
MASK_FILE = "brain_mask.npy"
SEG_FILE = "seg.npy"
META_FILE = "meta.json"
TEMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"
_FLOAT16_MAX = float(np.finfo(np.float16).max)


# -- source fingerprints ---------------------------------------------------------------------------
def source_fingerprint(case: Case, modalities: Sequence[str] | None = None) -> dict[str, Any]:
    """Name, size and mtime of every input file of ``case``: a changed file makes the entry stale.

    Size + mtime (not a content hash) because hashing 4 x 10 MB per case on every resume would
    cost as much as decoding; this is the same trade-off ``make`` and ``rsync`` make.
    """
    names = list(modalities) if modalities is not None else list(case.images)
    files: dict[str, Any] = {}
    for name in names:
        if name not in case.images:
            have = ", ".join(case.images) or "(none)"
            raise DataError(
                f"case {case.case_id}: modality {name!r} requested but not found (has {have}); "
                "add the file or choose --modalities among those present"
            )
        files[name] = _file_stamp(case.case_id, Path(case.images[name]))
    seg = _file_stamp(case.case_id, Path(case.seg)) if case.seg is not None else None
    return {"images": files, "seg": seg}


def _file_stamp(case_id: str, path: Path) -> dict[str, Any]:
    try:
        st = path.stat()
    except OSError as exc:
        raise DataError(
            f"case {case_id}: cannot read {path} ({exc.strerror or exc}); restore the file or "
            "remove the case from the dataset folder"
        ) from None
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


# -- paths -----------------------------------------------------------------------------------------
def case_path(cache_dir: Path | str, case_id: str) -> Path:
    """The folder of ``case_id`` inside a pipeline's cache folder (whether or not it exists)."""
    if not case_id or case_id.startswith(".") or "/" in case_id or "\\" in case_id:
        raise DataError(f"case id {case_id!r} cannot name a cache folder; rename the case folder")
    return Path(cache_dir) / case_id


def _is_complete(path: Path) -> bool:
    if not (path / META_FILE).is_file():
        return False
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    if meta.get("format_version") != CACHE_FORMAT_VERSION:
        return False
    files = [IMAGE_FILE, MASK_FILE] + ([SEG_FILE] if meta.get("has_seg") else [])
    return all((path / name).is_file() for name in files)


def read_meta(cache_dir: Path | str, case_id: str) -> dict[str, Any] | None:
    """``meta.json`` of a complete case, or None when the case is absent or incomplete."""
    path = case_path(cache_dir, case_id)
    if not _is_complete(path):
        return None
    return json.loads((path / META_FILE).read_text())


def is_cached(
    cache_dir: Path | str,
    case: Case | str,
    *,
    modalities: Sequence[str] | None = None,
    fingerprint: Mapping[str, Any] | None = None,
) -> bool:
    """True when the case is complete and, given a :class:`Case`, fresh.

    Fresh means: same modalities in the same order and every source file with the size and
    mtime recorded at write time. A case id alone checks completeness only.
    """
    if isinstance(case, str):
        return _is_complete(case_path(cache_dir, case))
    meta = read_meta(cache_dir, case.case_id)
    if meta is None:
        return False
    if fingerprint is None:
        try:
            fingerprint = source_fingerprint(case, modalities)
        except DataError:
            return False
    if list(fingerprint["images"]) != list(meta.get("modalities") or []):
        return False
    return meta.get("source") == jsonable(fingerprint)


def cache_index(cache_dir: Path | str) -> list[str]:
    """Sorted ids of the complete cases in ``cache_dir`` (temp and incomplete folders ignored)."""
    root = Path(cache_dir)
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and _is_complete(p)
    )


def clean_temp_dirs(cache_dir: Path | str, *, all_owners: bool = False) -> int:
    """Remove leftovers of interrupted writes; returns how many folders went.

    A temp folder carries its writer's pid; one whose process is still alive is kept (another
    ``prepare`` may be writing it) unless ``all_owners``.
    """
    root = Path(cache_dir)
    if not root.is_dir():
        return 0
    removed = 0
    for p in root.iterdir():
        if not p.name.startswith((TEMP_PREFIX, _OLD_PREFIX)):
            continue
        pid = _owner_pid(p.name)
        if not all_owners and pid is not None and pid != os.getpid() and _alive(pid):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed += 1
    return removed


def _owner_pid(name: str) -> int | None:
    parts = name.split("-")  # .tmp-<pid>-<uuid>-<case_id>
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- writing ---------------------------------------------------------------------------------------
def write_cached_case(
    cache_dir: Path | str,
    scan: Scan,
    pipeline_config: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    *,
    source: Mapping[str, Any] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``scan`` atomically as ``<cache_dir>/<case_id>/`` and return that folder.

    ``source`` is the :func:`source_fingerprint` of the input files (stale detection). An
    existing entry for the case is replaced; readers see either the old or the new one.
    """
    image = np.asarray(scan.image)
    if image.ndim != 4:
        raise DataError(
            f"case {scan.case_id}: expected image (C, X, Y, Z), got shape {image.shape}; "
            "the pipeline must return a channel-first 3-D scan"
        )
    lo, hi = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):  # min / max propagate NaN: one cheap pass each
        raise DataError(
            f"case {scan.case_id}: preprocessed image has NaN or inf values; check the input "
            "files or the pipeline's intensity steps"
        )
    if max(-lo, hi) > _FLOAT16_MAX:
        raise DataError(
            f"case {scan.case_id}: preprocessed intensities reach {max(-lo, hi):.4g}, beyond float16 "
            f"(+-{_FLOAT16_MAX:g}) the cache stores; add an intensity step (median-scale, zscore)"
        )
    spatial = image.shape[1:]
    mask = _mask_or_default(scan, spatial)
    seg = None
    if scan.seg is not None:
        seg = np.asarray(scan.seg)
        if seg.shape != spatial:
            raise DataError(
                f"case {scan.case_id}: seg shape {seg.shape} differs from image {spatial}; "
                "the pipeline must transform seg with the image"
            )
        if seg.min(initial=0) < 0 or seg.max(initial=0) > 255:
            raise DataError(f"case {scan.case_id}: seg labels outside 0..255; expected BraTS labels")

    cache_dir = Path(cache_dir)
    final = case_path(cache_dir, scan.case_id)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{scan.case_id}"
    tmp.mkdir()
    try:
        # (C, X, Y, Z) -> (Z, C, X, Y): one axial slice, all channels, is one contiguous block.
        # Cast in memory order first, then transpose the half-size array; crop-pad already lays
        # images out slice-major, so the transpose is then free.
        half = _to_float16(image)
        np.save(tmp / IMAGE_FILE, np.ascontiguousarray(half.transpose(3, 0, 1, 2)), allow_pickle=False)
        del half
        np.save(tmp / MASK_FILE, np.ascontiguousarray(mask.transpose(2, 0, 1)), allow_pickle=False)
        if seg is not None:
            np.save(tmp / SEG_FILE, np.ascontiguousarray(seg.transpose(2, 0, 1), dtype=np.uint8), allow_pickle=False)
        meta = _build_meta(scan, mask, seg, pipeline_config, source, extra_meta)
        _write_json(tmp / META_FILE, meta)  # written last: its presence marks completeness
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _to_float16(image: np.ndarray) -> np.ndarray:
    """``image.astype(float16)`` in memory order; through torch when it is already imported.

    numpy's float32 -> float16 cast is scalar (~3.5 ns a voxel, ~85 ms for a 4 x 192 x 192 x 160
    case); torch's is vectorised (~10x faster). torch is never imported here for it (``prepare``
    must not pay the import), only used when the process already has it.
    """
    torch = sys.modules.get("torch")
    if torch is not None and all(st > 0 for st in image.strides) and image.dtype == np.float32:
        out = np.empty_like(image, dtype=np.float16)  # same memory order (order="K")
        torch.from_numpy(out).copy_(torch.from_numpy(image))  # element-wise: any layout is right
        return out
    return image.astype(np.float16)


def _mask_or_default(scan: Scan, spatial: tuple[int, ...]) -> np.ndarray:
    if scan.brain_mask is not None:
        mask = np.asarray(scan.brain_mask, dtype=bool)
        if mask.shape != spatial:
            raise DataError(
                f"case {scan.case_id}: brain mask shape {mask.shape} differs from image {spatial}; "
                "the pipeline must transform the mask with the image"
            )
        return mask
    # No mask from the pipeline: BraTS images are skull-stripped with a zero background, so the
    # brain is where any channel is non-zero (before scaling). Pipelines should pass a mask.
    return np.any(np.asarray(scan.image) != np.asarray(scan.image)[:, :1, :1, :1], axis=0)


def _build_meta(
    scan: Scan,
    mask: np.ndarray,
    seg: np.ndarray | None,
    pipeline_config: Any,
    source: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    meta_in = dict(scan.meta or {})
    c, x, y, z = scan.image.shape
    brain_per_slice = mask.sum(axis=(0, 1)).astype(int).tolist()
    tumour_per_slice = (seg > 0).sum(axis=(0, 1)).astype(int).tolist() if seg is not None else None
    meta: dict[str, Any] = {
        "format_version": CACHE_FORMAT_VERSION,
        "case_id": scan.case_id,
        "modalities": list(scan.modalities),
        "layout": "image (Z, C, X, Y) float16; brain_mask, seg (Z, X, Y)",
        "spatial_shape": [x, y, z],
        "affine": np.asarray(scan.affine, dtype=float).tolist(),
        "original_shape": meta_in.get("original_shape"),
        "original_affine": meta_in.get("original_affine"),
        "crop_box": meta_in.get("crop_box") or _crop_record(meta_in),
        "has_seg": seg is not None,
        "brain_voxels_per_slice": brain_per_slice,
        "tumour_voxels_per_slice": tumour_per_slice,
        "pipeline": pipeline_config,
        "source": source,
        "scan_meta": meta_in,
        "versions": {"brats_ad": __version__, "numpy": np.__version__},
    }
    if extra:
        meta.update(extra)
    return jsonable(meta)


def _crop_record(meta: Mapping[str, Any]) -> Any:
    """The crop-pad step's record (``start``, ``shape``) when the pipeline cropped, else None."""
    crops = [s for s in meta.get("steps") or [] if isinstance(s, Mapping) and s.get("name") == "crop-pad"]
    return crops[-1] if crops else None


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final``; an existing ``final`` is moved aside first, then deleted."""
    old = None
    if final.exists():
        old = final.parent / f"{_OLD_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{final.name}"
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        if final.exists() and _is_complete(final):  # a concurrent writer finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")


# -- reading ---------------------------------------------------------------------------------------
class CachedCase:
    """Read-only view of one cached case; arrays are memory-mapped on first use.

    Safe to pass to DataLoader workers: pickling keeps only the path and metadata, and each
    process opens its own memory maps lazily.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not _is_complete(self.path):
            raise DataError(
                f"{self.path} is not a complete cache entry (missing or partial files); "
                "rerun 'brats-ad prepare' to write it"
            )
        self.meta: dict[str, Any] = json.loads((self.path / META_FILE).read_text())
        self._maps: dict[str, np.ndarray] = {}

    @classmethod
    def open(cls, cache_dir: Path | str, case_id: str) -> "CachedCase":
        return cls(case_path(cache_dir, case_id))

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "meta": self.meta, "_maps": {}}

    def __repr__(self) -> str:
        return f"CachedCase({self.case_id!r}, shape={self.spatial_shape}, modalities={self.modalities})"

    # -- metadata ---------------------------------------------------------------------------------
    @property
    def case_id(self) -> str:
        return self.meta["case_id"]

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.meta["modalities"])

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """(X, Y, Z) of the processed grid."""
        return tuple(self.meta["spatial_shape"])  # type: ignore[return-value]

    @property
    def num_slices(self) -> int:
        return int(self.meta["spatial_shape"][2])

    @property
    def affine(self) -> np.ndarray:
        """Voxel -> world (mm) of the processed grid."""
        return np.asarray(self.meta["affine"], dtype=float)

    @property
    def has_seg(self) -> bool:
        return bool(self.meta["has_seg"])

    @property
    def brain_voxels_per_slice(self) -> np.ndarray:
        return np.asarray(self.meta["brain_voxels_per_slice"], dtype=np.int64)

    @property
    def tumour_voxels_per_slice(self) -> np.ndarray | None:
        counts = self.meta["tumour_voxels_per_slice"]
        return None if counts is None else np.asarray(counts, dtype=np.int64)

    def channels(self, modalities: Sequence[str] | None) -> list[int]:
        """Channel indices of ``modalities`` (all when None), or a DataError naming what exists."""
        if modalities is None:
            return list(range(len(self.modalities)))
        missing = [m for m in modalities if m not in self.modalities]
        if missing:
            raise DataError(
                f"case {self.case_id}: cache has modalities {list(self.modalities)}, not {missing}; "
                "prepare the cache with those modalities"
            )
        return [self.modalities.index(m) for m in modalities]

    # -- arrays (memory maps, (Z, ...) order) -----------------------------------------------------------
    def _map(self, name: str) -> np.ndarray:
        arr = self._maps.get(name)
        if arr is None:
            arr = np.load(self.path / name, mmap_mode="r", allow_pickle=False)
            self._maps[name] = arr
        return arr

    @property
    def image(self) -> np.ndarray:
        """Memory map, float16 (Z, C, X, Y)."""
        return self._map(IMAGE_FILE)

    @property
    def brain_mask(self) -> np.ndarray:
        """Memory map, bool (Z, X, Y)."""
        return self._map(MASK_FILE)

    @property
    def seg(self) -> np.ndarray | None:
        """Memory map, uint8 (Z, X, Y), or None for an unlabelled case."""
        return self._map(SEG_FILE) if self.has_seg else None

    def slice(self, z: int, channels: Sequence[int] | None = None) -> np.ndarray:
        """Axial slice ``z`` as float32 (C, X, Y)."""
        block = self.image[z] if channels is None else self.image[z, list(channels)]
        return np.asarray(block, dtype=np.float32)

    def patch(
        self, corner: Sequence[int], size: int | Sequence[int], channels: Sequence[int] | None = None
    ) -> np.ndarray:
        """Block at ``corner`` (x0, y0, z0) of ``size`` voxels, float32 (C, X, Y, Z) like a Scan."""
        x0, y0, z0 = (int(v) for v in corner)
        sx, sy, sz = _triple(size)
        block = self.image[z0:z0 + sz, :, x0:x0 + sx, y0:y0 + sy]  # (Z, C, X, Y)
        if channels is not None:
            block = block[:, list(channels)]
        return np.asarray(block, dtype=np.float32).transpose(1, 2, 3, 0)

    def mask_patch(self, corner: Sequence[int], size: int | Sequence[int], *, seg: bool = False) -> np.ndarray:
        """Brain mask (or seg) block at ``corner`` as (X, Y, Z)."""
        x0, y0, z0 = (int(v) for v in corner)
        sx, sy, sz = _triple(size)
        arr = self.seg if seg else self.brain_mask
        if arr is None:
            raise DataError(f"case {self.case_id}: no segmentation in the cache (unlabelled case)")
        return np.asarray(arr[z0:z0 + sz, x0:x0 + sx, y0:y0 + sy]).transpose(1, 2, 0)

    def to_scan(self) -> Scan:
        """The whole case back as a :class:`Scan` (C, X, Y, Z) float32, e.g. for inference."""
        image = np.asarray(self.image, dtype=np.float32).transpose(1, 2, 3, 0)
        seg = None if self.seg is None else np.asarray(self.seg).transpose(1, 2, 0)
        return Scan(
            case_id=self.case_id,
            image=np.ascontiguousarray(image),
            modalities=self.modalities,
            affine=self.affine,
            seg=None if seg is None else np.ascontiguousarray(seg),
            brain_mask=np.ascontiguousarray(np.asarray(self.brain_mask).transpose(1, 2, 0)),
            meta=dict(self.meta.get("scan_meta") or {}),
        )


def _triple(size: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(size, (int, np.integer)):
        return (int(size),) * 3
    t = tuple(int(s) for s in size)
    if len(t) != 3:
        raise ValueError(f"size must be an int or 3 ints, got {size!r}")
    return t  # type: ignore[return-value]


def open_cache(cache_dir: Path | str, case_ids: Iterable[str] | None = None) -> list[CachedCase]:
    """Open the complete cases of ``cache_dir`` (all, or ``case_ids`` in that order)."""
    ids = cache_index(cache_dir) if case_ids is None else list(case_ids)
    return [CachedCase.open(cache_dir, cid) for cid in ids]
