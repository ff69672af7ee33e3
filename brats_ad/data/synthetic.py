"""The embedded default dataset: BraTS-2021-layout cases synthesised from real MNI152 anatomy.

Lets ``brats-ad bench`` run anywhere without BraTS: every case is the MNI152 template (shipped in
nilearn's wheel) moved by its own random pose, elastic field and mass effect, with a lobulated
tumour in most cases, rendered as T1, T1ce, T2 and FLAIR with per-case contrast, bias and noise.
A case depends only on ``(seed, index)``, so cases can be made in any order and resumed.
Importing this module is cheap: numpy only (nilearn, scipy and nibabel load when generating).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brats_ad.data.scan import MODALITIES, Case, canonical_modality
from brats_ad.data.synthetic_anatomy import AFFINE, SHAPE
from brats_ad.errors import ConfigError, DataError
from brats_ad.io import write_json_atomic

#: Bump when the same (seed, index) would give different arrays; old folders are then refused.
GENERATOR_VERSION = 1
MANIFEST = "synthetic.json"
_FIRST_ID = 90000  # case IDs BraTS2021_90000, ... parse like real 2021 IDs but never clash
_MAX_CASES = 10000  # five digits
#: The anatomy every case is derived from, with the notice its permissive licence asks to keep.
_TEMPLATE_NOTICE = (
    "MNI ICBM152 2009a nonlinear symmetric T1, GM, WM and brain mask as shipped in nilearn "
    "(Fonov et al., NeuroImage 2011, doi:10.1016/j.neuroimage.2010.07.033). Copyright (C) "
    "1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, "
    "McGill University."
)


def case_id(index: int) -> str:
    """The BraTS 2021 style ID of case ``index`` (``BraTS2021_90000`` for index 0)."""
    return f"BraTS2021_{_FIRST_ID + index:05d}"


def healthy_flags(cases: int, seed: int, healthy_fraction: float) -> list[bool]:
    """Which cases have no tumour: spread evenly (any prefix of n cases holds floor-ish n*f).

    A seeded phase decides where in each period the healthy cases fall; the flag of case i never
    depends on how many cases are asked for, so growing a dataset keeps the earlier cases.
    """
    phase = float(np.random.default_rng([seed, 2**31 - 1]).uniform())
    return [
        math.floor((i + 1) * healthy_fraction + phase) > math.floor(i * healthy_fraction + phase)
        for i in range(cases)
    ]


@dataclass(frozen=True)
class SyntheticCase:
    """One generated case in memory: int16 images per modality, uint8 BraTS labels, brain mask."""

    case_id: str
    images: dict[str, np.ndarray]  # modality -> (240, 240, 155) int16
    seg: np.ndarray  # (240, 240, 155) uint8, labels {0, 1, 2, 4}
    brain_mask: np.ndarray  # (240, 240, 155) bool
    tissue: np.ndarray  # (240, 240, 155) uint8: 0 outside, 1 CSF, 2 GM, 3 WM (also under tumour)
    healthy: bool
    info: dict[str, Any] = field(default_factory=dict)


def generate_case(seed: int, index: int, healthy: bool) -> SyntheticCase:
    """Synthesise case ``index`` of ``seed`` (deterministic; about 3 s on one core)."""
    from brats_ad.data import synthetic_anatomy as anat
    from brats_ad.data import synthetic_contrast as con
    from brats_ad.data import synthetic_tumour as tum

    rng = np.random.default_rng([seed, index])
    anatomy = anat.load_anatomy()
    box = anatomy.box
    origin = np.array([s.start for s in box])
    box_shape = tuple(s.stop - s.start for s in box)

    transform = anat.sample_subject_transform(rng, anatomy)
    contrasts = con.sample_contrasts(rng)
    site = anatomy.tumour_sites[rng.integers(len(anatomy.tumour_sites))] + rng.uniform(-0.5, 0.5, 3)
    spec = tum.sample_tumour(rng, transform.to_brats(site) - origin)  # centre in box voxels
    displacement = anat.smooth_fields(rng, box_shape, spacing=24.0, count=3)
    displacement *= np.float32(rng.uniform(1.0, 2.5))  # elastic field, a few mm at most
    tbox = tum.tumour_box(spec, box_shape, scale=2.0)
    if not healthy:
        displacement[(slice(None), *tbox)] += tum.mass_effect_displacement(spec, tbox)

    maps, _ = anat.pull_back(anatomy, transform, displacement, origin)
    del displacement
    brain = (maps[0] + maps[1] + maps[2]) > 0.5
    texture = anat.smooth_fields(rng, box_shape, spacing=4.0, count=1)[0]
    bias = np.exp(anat.smooth_fields(rng, box_shape, spacing=48.0, count=len(con.MODALITIES)))

    labels = np.zeros(box_shape, np.uint8)
    tumour = None
    if not healthy:
        labels[tbox] = tum.tumour_labels(rng, spec, tbox, maps[1][tbox], brain[tbox])
        brain[tbox] |= labels[tbox] > 0
        tumour = _soft_compartments(rng, labels[tbox], spec.radius)

    images = {}
    for k, modality in enumerate(con.MODALITIES):
        contrast = contrasts[modality]
        image = con.render(contrast, maps, texture, None)
        if tumour is not None:
            image[tbox] = con.render(contrast, maps[(slice(None), *tbox)], texture[tbox], tumour)
        bias_k = bias[k] ** np.float32(contrast.bias_amplitude)
        boxed = con.finish(rng, contrast, image, bias_k, brain)
        full = np.zeros(SHAPE, np.int16)
        full[box] = boxed
        images[modality] = full

    seg = np.zeros(SHAPE, np.uint8)
    seg[box] = labels
    mask = np.zeros(SHAPE, bool)
    mask[box] = brain
    tissue = np.zeros(SHAPE, np.uint8)
    tissue[box] = np.where(brain, np.argmax(maps[[2, 0, 1]], axis=0) + 1, 0)
    info: dict[str, Any] = {"contrast": {m: c.as_dict() for m, c in contrasts.items()}}
    if not healthy:
        info["tumour"] = spec.as_dict() | {
            "voxels": {str(v): int((labels == v).sum()) for v in (1, 2, 4)}
        }
    return SyntheticCase(case_id(index), images, seg, mask, tissue, healthy, info)


def _soft_compartments(
    rng: np.random.Generator, labels: np.ndarray, radius: float
) -> dict[str, np.ndarray]:
    """Partial-volume weights per compartment, an oedema grade and a tumour texture."""
    from scipy import ndimage

    soft = {
        name: ndimage.gaussian_filter((labels == value).astype(np.float32), 0.7)
        for name, value in (("necrosis", 1), ("enhancing", 4), ("oedema", 2))
    }
    core = ((labels == 1) | (labels == 4)).astype(np.float32)
    near_core = ndimage.gaussian_filter(core, max(2.0, 0.35 * radius))
    soft["oedema_grade"] = np.clip(near_core / max(float(near_core.max()), 1e-6) * 1.6, 0.0, 1.0)
    noise = ndimage.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32), 1.5)
    soft["texture"] = noise / max(float(noise.std()), 1e-6)
    return soft


def write_synthetic_dataset(
    out: Path,
    cases: int,
    seed: int,
    *,
    healthy_fraction: float = 0.25,
    progress: bool = True,
) -> list[Path]:
    """Write ``cases`` BraTS-2021-layout cases under ``out``; return their folders, sorted.

    Cases already present are kept (the run resumes); each case folder appears complete or not
    at all (written as ``out/.tmp-<id>-<pid>`` then renamed). ``out/synthetic.json`` records the
    generator version, seed, cases and which are healthy.
    """
    _check_request(cases, seed, healthy_fraction)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out, seed, healthy_fraction)
    flags = healthy_flags(cases, seed, healthy_fraction)
    rows = {row["case_id"]: row for row in manifest["cases"]}
    _remove_stale_temporaries(out)
    todo = []
    for i in range(cases):
        if _complete(out / case_id(i)):
            rows.setdefault(case_id(i), {"case_id": case_id(i), "index": i, "healthy": flags[i]})
        else:
            todo.append(i)

    def save() -> None:
        manifest["cases"] = [rows[k] for k in sorted(rows)]
        write_json_atomic(out / MANIFEST, manifest)

    if todo or len(rows) != len(manifest["cases"]):  # a complete folder stays read-only
        save()  # the seed is on disk before the first case, so an interrupted run can resume
    with _progress(progress, len(todo)) as advance:
        for i in todo:
            case = generate_case(seed, i, flags[i])
            _write_case(out, case)
            row = {"case_id": case.case_id, "index": i, "healthy": case.healthy}
            rows[case.case_id] = row | case.info
            save()
            advance()
    return [out / case_id(i) for i in range(cases)]


def _check_request(cases: int, seed: int, healthy_fraction: float) -> None:
    if not _is_int(cases) or not 1 <= cases <= _MAX_CASES:
        raise ConfigError(f"synthetic cases must be an integer in 1..{_MAX_CASES}, got {cases!r}")
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"synthetic seed must be a non-negative integer, got {seed!r}")
    if not 0.0 <= float(healthy_fraction) <= 1.0:
        raise ConfigError(f"healthy_fraction must be in [0, 1], got {healthy_fraction!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _complete(folder: Path) -> bool:
    return all((folder / f"{folder.name}_{m}.nii.gz").is_file() for m in (*MODALITIES, "seg"))


def _read_manifest(out: Path, seed: int, healthy_fraction: float) -> dict[str, Any]:
    """The existing manifest if it matches this request; a fresh one for an empty folder."""
    path = out / MANIFEST
    fresh = {
        "generator": "brats_ad.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "healthy_fraction": float(healthy_fraction),
        "shape": list(SHAPE),
        "affine": AFFINE.tolist(),
        "labels": {"1": "necrotic core", "2": "oedema", "4": "enhancing tumour"},
        "template": _TEMPLATE_NOTICE,
        "cases": [],
    }
    if not path.is_file():
        stray = sorted(p.name for p in out.glob("BraTS2021_*") if p.is_dir())
        if stray:
            raise DataError(
                f"{out}: holds case folders ({stray[0]}, ...) but no {MANIFEST}, so they cannot be "
                "checked against this seed; to generate data pass an empty or new folder, to read these "
                "cases as real BraTS use the 'brats' dataset (brats-ad bench --dataset brats)"
            )
        return fresh
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{path}: unreadable synthetic manifest ({exc}); delete the folder and rerun"
        ) from exc
    for key, wanted in (
        ("generator_version", GENERATOR_VERSION),
        ("seed", seed),
        ("healthy_fraction", float(healthy_fraction)),
    ):
        if manifest.get(key) != wanted:
            raise DataError(
                f"{out}: synthetic cases were made with {key}={manifest.get(key)!r}, this run asks "
                f"for {wanted!r}; use another output folder or delete this one"
            )
    return manifest


def _remove_stale_temporaries(out: Path, age_s: float = 600.0) -> None:
    """Delete ``.tmp-*`` folders of interrupted runs (old ones only: a live run may own new ones)."""
    now = time.time()
    for tmp in out.glob(".tmp-*"):
        try:
            if now - tmp.stat().st_mtime > age_s:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def _write_case(out: Path, case: SyntheticCase) -> None:
    """Write the five files into a private temporary folder, then rename it into place."""
    import nibabel as nib

    tmp = out / f".tmp-{case.case_id}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    arrays = {**case.images, "seg": case.seg}
    for name, array in arrays.items():
        image = nib.Nifti1Image(array, AFFINE)
        image.header.set_xyzt_units("mm", "sec")
        image.set_qform(AFFINE, code=1)
        image.set_sform(AFFINE, code=1)
        nib.save(image, tmp / f"{case.case_id}_{name}.nii.gz")
    final = out / case.case_id
    if _complete(final):  # another process wrote the same (identical) case meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if final.exists():  # an incomplete folder, e.g. a file deleted by hand
        shutil.rmtree(final)
    os.replace(tmp, final)


class _progress:
    """A rich progress bar when asked for, else a no-op; yields an ``advance()`` callable."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled and total > 0
        self.total = total
        self._bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda: None
        from brats_ad.progress import progress_bar

        self._bar = progress_bar(eta=True)
        self._bar.__enter__()
        task = self._bar.add_task("synthesising cases", total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


class SyntheticDataset:
    """Dataset plugin ``synthetic``: generates the cases under ``root`` on first use, then lists them.

    The folder is a plain BraTS 2021 layout, so ``brats`` can read it too; ``synthetic.json``
    says which cases are healthy.
    """

    name = "synthetic"

    def __init__(
        self,
        root: str | Path,
        modalities: Sequence[str] = MODALITIES,
        cases: int = 24,
        seed: int = 0,
        *,
        healthy_fraction: float = 0.25,
        progress: bool = True,
    ) -> None:
        if isinstance(modalities, str):
            modalities = (modalities,)
        self.modalities = tuple(canonical_modality(m) for m in modalities)
        if not self.modalities:
            raise ConfigError("synthetic dataset needs at least one modality, got none; e.g. ['flair']")
        _check_request(cases, seed, healthy_fraction)
        self.root = Path(root)
        self.n_cases = cases
        self.seed = seed
        self.healthy_fraction = healthy_fraction
        self.progress = progress

    def cases(self) -> list[Case]:
        """The cases, sorted by ID; missing ones are generated first (resumable)."""
        folders = write_synthetic_dataset(
            self.root, self.n_cases, self.seed,
            healthy_fraction=self.healthy_fraction, progress=self.progress,
        )
        return [
            Case(
                case_id=f.name,
                images={m: f / f"{f.name}_{m}.nii.gz" for m in self.modalities},
                seg=f / f"{f.name}_seg.nii.gz",
                dataset=self.name,
                naming="brats2021",
            )
            for f in folders
        ]

    def healthy_case_ids(self) -> list[str]:
        """IDs of the generated cases without a tumour (from the manifest)."""
        flags = healthy_flags(self.n_cases, self.seed, self.healthy_fraction)
        return [case_id(i) for i, healthy in enumerate(flags) if healthy]

    def __repr__(self) -> str:
        return f"SyntheticDataset({str(self.root)!r}, cases={self.n_cases}, seed={self.seed})"
