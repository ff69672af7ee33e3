"""Read a discovered :class:`Case` into a :class:`Scan`, checking everything a bad file can break.

Discovery never opens files, so this is where a truncated download, a 4-D series, modalities on
different grids, NaN voxels, a blank volume or a foreign label map surfaces -- each as one
:class:`DataError` line naming the case, the file and the fix.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brats_ad.data.brats import check_modalities
from brats_ad.data.scan import Case, Scan
from brats_ad.errors import DataError

try:  # optional: ISA-L's gzip is 2-3x faster than zlib and decodes the same streams
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - depends on the environment
    import zlib as _zlib

#: Allowed segmentation labels per naming (the anomaly = seg > 0). 2023+ naming: GLI/MET/MEN use
#: {1, 2, 3}; BraTS 2024 adds label 4 (GLI post-treatment: resection cavity; PED: oedema), which
#: is abnormal tissue too, so it is accepted and counts as anomaly.
SEG_LABELS: dict[str, frozenset[int]] = {
    "brats2021": frozenset({0, 1, 2, 4}),
    "brats2023": frozenset({0, 1, 2, 3, 4}),
    "custom": frozenset({0, 1, 2, 3, 4}),
}
#: Largest world-coordinate difference (mm) between two affines still taken as the same grid.
AFFINE_TOLERANCE_MM = 1e-3
_BRATS_NAMINGS = ("brats2021", "brats2023")
_LAYOUTS = ("c", "native")


def load_case(case: Case, modalities: Sequence[str] | None = None, *, layout: str = "c") -> Scan:
    """Load ``case`` as a float32 ``(C, X, Y, Z)`` scan in the order of ``modalities``.

    ``layout`` is the image's memory order: ``"c"`` (C-contiguous, the default) or
    ``"native"``: the files' own voxel order (NIfTI stores X fastest), i.e. ``(Z, C, Y, X)`` in
    memory, which makes the int16 -> float32 cast a sequential pass instead of a transpose
    (~4x faster). Indexing is ``(C, X, Y, Z)`` either way; ``prepare`` uses ``"native"`` since
    the preprocessing steps work in any layout and crop-pad writes the cache's layout.

    ``modalities`` defaults to the case's own (the dataset's choice). BraTS cases (zero
    background, skull-stripped) get ``brain_mask = any(channel != 0)``; other namings get
    ``None`` so the skull-stripping step computes it. BraTS modalities must share one voxel
    grid; other namings (raw healthy-control scans) are resampled onto the first modality's grid
    by their headers, for the co-registration step to refine.
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(_LAYOUTS)}, got {layout!r}")
    mods = _requested(case, modalities)
    brats = case.naming in _BRATS_NAMINGS
    paths = [Path(case.images[m]) for m in mods]

    first, ref_affine = _read_volume(case, paths[0])
    shape = first.shape
    if layout == "c":
        image = np.empty((len(mods), *shape), dtype=np.float32)
    else:  # the file's voxel order ((X, Y, Z) Fortran = (Z, Y, X) in memory), channels per slice
        image = np.empty((shape[2], len(mods), shape[1], shape[0]), dtype=np.float32).transpose(1, 3, 2, 0)
    resampled: list[str] = []
    brain_mask: np.ndarray | None = None
    for c, (mod, path) in enumerate(zip(mods, paths)):
        if c == 0:
            data = first
        else:
            data, affine = _read_volume(case, path)
            if not _same_grid(data.shape, affine, shape, ref_affine):
                if brats:
                    raise DataError(_grid_message(case, path, data.shape, affine, paths[0], shape, ref_affine))
                data = _resample(data, affine, shape, ref_affine)
                resampled.append(mod)
        image[c] = data  # the one cast to float32
        _check_values(case, path, data, image[c])
        if brats:  # skull-stripped, zero background: brain = any channel non-zero
            nonzero = data != 0  # on the stored (often int16) array: half the memory traffic
            brain_mask = nonzero if brain_mask is None else np.logical_or(brain_mask, nonzero, out=brain_mask)
        del data
    del first

    seg = _load_seg(case, shape, ref_affine) if case.seg is not None else None

    meta: dict[str, Any] = {
        "dataset": case.dataset,
        "naming": case.naming,
        "original_shape": list(shape),
        "original_affine": np.asarray(ref_affine, dtype=float).tolist(),
        "source_files": _sources(case, mods),
    }
    if resampled:
        meta["resampled_to_grid_of"] = {"reference": mods[0], "modalities": resampled}
    return Scan(
        case_id=case.case_id,
        image=image,
        modalities=mods,
        affine=np.asarray(ref_affine, dtype=np.float64),
        seg=seg,
        brain_mask=brain_mask,
        meta=meta,
    )


def _requested(case: Case, modalities: Sequence[str] | None) -> tuple[str, ...]:
    if modalities is None:
        mods = tuple(case.images)
    else:
        mods = check_modalities(modalities)
    missing = [m for m in mods if m not in case.images]
    if missing:
        have = ", ".join(case.images) or "none"
        raise DataError(
            f"case {case.case_id}: modality {missing[0]!r} was not discovered (the case has {have}); "
            "add it to the dataset's modalities"
        )
    return mods


def _read_volume(case: Case, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The voxel array (on-disk dtype, scaling applied) and affine of one 3-D NIfTI."""
    try:
        data, affine = _decode(path)
        affine = np.asarray(affine, dtype=np.float64)
    except MemoryError:
        raise
    except FileNotFoundError:
        raise DataError(
            f"case {case.case_id}: file {path} disappeared after discovery; restore it or rerun"
        ) from None
    except Exception as exc:  # nibabel, gzip, zlib, EOF and OS errors all mean "unreadable"
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise DataError(
            f"case {case.case_id}: cannot read {path} ({reason}); the file is corrupt or "
            "truncated - download or extract it again"
        ) from None
    if data.dtype.kind not in "biuf":
        raise DataError(
            f"case {case.case_id}: {path} stores {data.dtype} voxels, expected real numbers; "
            "convert it to a scalar (grey-level) NIfTI"
        )
    while data.ndim > 3 and data.shape[-1] == 1:  # (X, Y, Z, 1) as some tools write
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(
            f"case {case.case_id}: {path} has shape {tuple(data.shape)}, expected one 3-D volume "
            "(X, Y, Z); extract a single volume (e.g. fslroi) and point the case at it"
        )
    if not np.isfinite(affine).all():
        raise DataError(
            f"case {case.case_id}: {path} has a non-finite affine; fix its NIfTI header "
            "(sform/qform)"
        )
    return data, affine


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels (stored dtype, scaling applied) and affine of a NIfTI file.

    ``.nii.gz`` files are gunzipped in one call (ISA-L's igzip when the optional ``isal``
    package is installed, 2-3x faster than zlib; else zlib) and the voxels are a zero-copy view
    of the decompressed bytes. nibabel parses the header; unscaled data skips its streaming
    reader (chunked gzip reads and a copy). Anything else is read by ``nib.load``.
    """
    import nibabel as nib

    name = path.name.lower()
    if not name.endswith(".nii.gz"):
        img = nib.load(path, mmap=False)  # read now: errors surface here, no file stays mapped
        # asanyarray keeps the stored dtype (int16 for BraTS): we cast once, into the output.
        return np.asanyarray(img.dataobj), img.affine
    raw = gunzip(path.read_bytes())
    size = int.from_bytes(raw[:4], "little") if len(raw) >= 4 else 0
    if size not in (348, 540):
        size = int.from_bytes(raw[:4], "big")
    klass = nib.Nifti2Image if size == 540 else nib.Nifti1Image
    img = klass.from_bytes(raw)
    proxy = img.dataobj
    if getattr(proxy, "is_proxy", False) and float(proxy.slope) == 1.0 and float(proxy.inter) == 0.0:
        count = int(np.prod(proxy.shape, dtype=np.int64))
        data = np.frombuffer(raw, dtype=proxy.dtype, count=count, offset=int(proxy.offset))
        return data.reshape(proxy.shape, order=proxy.order), img.affine
    return np.asanyarray(proxy), img.affine


def gunzip(payload: bytes) -> bytes:
    """Decompress a (possibly multi-member) gzip stream; truncated input raises ``EOFError``."""
    parts = []
    while True:
        stream = _zlib.decompressobj(31)  # 31: gzip wrapper, CRC checked at the end
        parts.append(stream.decompress(payload))
        if not stream.eof:
            raise EOFError("compressed file ended before the end-of-stream marker was reached")
        payload = stream.unused_data
        if not payload.strip(b"\x00"):  # trailing zero padding is allowed, as in gzip
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)


def gzip_backend() -> str:
    """Which library :func:`load_case` gunzips with: ``"isal"`` or ``"zlib"``."""
    return "isal" if _zlib.__name__.startswith("isal") else "zlib"


def _same_grid(shape: tuple, affine: np.ndarray, ref_shape: tuple, ref_affine: np.ndarray) -> bool:
    return tuple(shape) == tuple(ref_shape) and _affine_gap_mm(affine, ref_affine, shape) <= AFFINE_TOLERANCE_MM


def _affine_gap_mm(a: np.ndarray, b: np.ndarray, shape: tuple) -> float:
    """Largest world-position difference (mm) of the grid's corner voxels under two affines."""
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    )
    return float(np.abs(corners @ (a - b).T)[:, :3].max())


def _grid_message(
    case: Case, path: Path, shape: tuple, affine: np.ndarray, ref_path: Path, ref_shape: tuple,
    ref_affine: np.ndarray,
) -> str:
    if tuple(shape) != tuple(ref_shape):
        what = f"has shape {tuple(shape)} but {ref_path.name} has {tuple(ref_shape)}"
    else:
        gap = _affine_gap_mm(affine, ref_affine, shape)
        what = f"has an affine up to {gap:.3g} mm away from that of {ref_path.name}"
    return (
        f"case {case.case_id}: {path} {what}; BraTS modalities must share one voxel grid - "
        "re-export the case co-registered, or drop the modality"
    )


def _resample(data: np.ndarray, affine: np.ndarray, shape: tuple, ref_affine: np.ndarray) -> np.ndarray:
    """Trilinear resampling onto the reference grid, in world space (nibabel + scipy)."""
    import nibabel as nib
    from nibabel.processing import resample_from_to

    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    out = resample_from_to(img, (tuple(shape), ref_affine), order=1, mode="constant", cval=0.0)
    return np.asarray(out.dataobj, dtype=np.float32)


def _check_values(case: Case, path: Path, raw: np.ndarray, channel: np.ndarray) -> None:
    """Non-finite voxels (possible only for float files) and blank volumes are errors."""
    if raw.dtype.kind == "f":
        finite = np.isfinite(channel)
        if not finite.all():
            bad = int(finite.size - np.count_nonzero(finite))
            raise DataError(
                f"case {case.case_id}: {path} has {bad} NaN/Inf voxels; re-export the scan or "
                "replace them (e.g. numpy.nan_to_num) before benchmarking"
            )
    values = channel if raw.dtype.kind == "f" else raw  # integers: scan the smaller array
    low, high = values.min(), values.max()
    if low == high:
        raise DataError(
            f"case {case.case_id}: {path} is blank (every voxel = {float(low):g}); the image holds "
            "no brain - export it again or remove the case"
        )


def _load_seg(case: Case, shape: tuple, ref_affine: np.ndarray) -> np.ndarray:
    """The label map as uint8, on the image grid, with labels allowed for the case's naming."""
    path = Path(case.seg)  # type: ignore[arg-type]
    data, affine = _read_volume(case, path)
    if tuple(data.shape) != tuple(shape):
        raise DataError(
            f"case {case.case_id}: segmentation {path} has shape {tuple(data.shape)} but the images "
            f"have {tuple(shape)}; use the segmentation made for this case"
        )
    gap = _affine_gap_mm(affine, ref_affine, shape)
    if gap > AFFINE_TOLERANCE_MM:
        # Same shape: voxel-aligned in practice (BraTS labels are drawn on the image grid), and
        # some releases carry slightly different seg headers, so warn rather than refuse.
        warnings.warn(
            f"case {case.case_id}: segmentation {path} affine differs from the images' by up to "
            f"{gap:.3g} mm; using it voxel-aligned with the images",
            stacklevel=3,
        )
    if data.dtype.kind not in "iub":  # float label maps: only whole numbers are labels
        finite = np.isfinite(data)
        if not finite.all() or not np.array_equal(data, np.round(data)):
            raise DataError(
                f"case {case.case_id}: segmentation {path} holds non-integer values; expected a "
                "label map - check that this is the seg file, not a probability map"
            )
    allowed = SEG_LABELS.get(case.naming, SEG_LABELS["custom"])
    low, high = data.min(), data.max()
    if low < 0 or high > 255:
        unexpected = sorted({int(low), int(high)} - allowed)
    else:
        seg = data.astype(np.uint8)
        # Only labels outside `allowed` matter: BraTS has at most one or two candidates in
        # [low, high], each an equality pass, far cheaper than a bincount of every voxel.
        candidates = [v for v in range(int(low), int(high) + 1) if v not in allowed]
        if len(candidates) <= 8:
            unexpected = [v for v in candidates if v in (low, high) or (seg == v).any()]
        else:
            present = np.flatnonzero(np.bincount(seg.ravel(), minlength=256))
            unexpected = sorted({int(v) for v in present} - allowed)
        if not unexpected:
            return seg
    raise DataError(
        f"case {case.case_id}: segmentation {path} has labels {unexpected} outside "
        f"{sorted(allowed)} expected for {case.naming} naming; check that the file is this "
        "case's BraTS segmentation (or rename the case to its real naming)"
    )


def _sources(case: Case, mods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Provenance for the cache: path, size and mtime of every file read."""
    files = {m: Path(case.images[m]) for m in mods}
    if case.seg is not None:
        files["seg"] = Path(case.seg)
    out = {}
    for role, path in files.items():
        st = os.stat(path)
        out[role] = {"path": str(path), "size": st.st_size, "mtime": st.st_mtime}
    return out
