"""``brats-ad predict``: anomaly maps for one raw case, as NIfTI overlays on the input scan's grid.

What a radiologist loads in ITK-SNAP / 3D Slicer: ``<out>/<case_id>_<scorer>.nii.gz``, float32,
with exactly the shape and the affine (sform and qform, with their codes) of the case's first
input modality, plus ``<out>/<case_id>_predict.json`` (checkpoint, scorers, sample scores,
versions, timing). Every file is written atomically (temp file + rename).

Everything the run needs comes from the training run folder: the checkpoint, and the
``train_config.json`` that ``brats-ad train`` writes beside it (modalities, pipeline, slice /
patch size). The case goes through the very preprocessing pipeline the training cache used,
is scored by :func:`brats_ad.infer.volume.score_volume`, and each map goes back to the input
grid with :func:`brats_ad.preprocess.pipeline.map_to_input_grid`.

Scorers that learn statistics (``fit``, e.g. ``combined``) are fitted once on the checkpoint's
own HEALTHY validation split and saved as ``<checkpoint dir>/scorers/<name>.json`` for later
runs (see :mod:`brats_ad.infer.fitting`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from brats_ad import __version__
from brats_ad.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from rich.console import Console

    from brats_ad.preprocess.pipeline import Pipeline
    from brats_ad.registry import Registries

RUN_CONFIG = "train_config.json"


def predict_case(
    checkpoint: Path | str,
    case_dir: Path | str,
    out_dir: Path | str,
    scorers: Sequence[str] | None = None,
    *,
    device: str = "auto",
    progress: bool = True,
    batch_size: int | None = None,
    registries: "Registries | None" = None,
    console: "Console | None" = None,
) -> dict[str, Path]:
    """Write one anomaly map per scorer for the case in ``case_dir``; return ``{scorer: path}``.

    ``scorers`` ``None`` means every registered scorer compatible with the model (what its
    registry entry ``provides``, and its dims); the others are listed as skipped, with why.
    """
    t0 = time.perf_counter()
    timing: dict[str, float] = {}
    if registries is None:
        from brats_ad.plugins import get_registries

        registries = get_registries()
    checkpoint, case_dir, out_dir = Path(checkpoint), Path(case_dir), Path(out_dir)
    say = _Say(console, progress)

    from brats_ad.infer.fitting import build_scorers, select_scorers
    from brats_ad.infer.volume import score_volume
    from brats_ad.train.checkpoint import load_checkpoint, load_model
    from brats_ad.train.device import select_device

    run_cfg = read_run_config(checkpoint)
    ckpt_info = load_checkpoint(checkpoint)
    model_name = ckpt_info["model"]
    del ckpt_info
    dev = select_device(device)
    model = load_model(checkpoint, device=dev, registries=registries)
    data = run_cfg.get("data") or {}
    dims = int(data.get("dims", model.config.spatial_dims))
    if dims != model.config.spatial_dims:
        raise ConfigError(
            f"{checkpoint.parent / RUN_CONFIG}: data.dims = {dims} but the checkpoint's model is "
            f"{model.config.spatial_dims}D; the file belongs to another run - retrain or restore it"
        )
    size = int(data.get("slice_size", 128)) if dims == 2 else int(data.get("patch_size", 64))
    batch = batch_size or _train_batch(run_cfg)
    selected, skipped = select_scorers(scorers, model_name, dims, registries)
    timing["load_model"] = time.perf_counter() - t0

    # the case, preprocessed exactly like the training cache
    t = time.perf_counter()
    modalities = input_modalities(run_cfg, model)
    case = find_case(case_dir, modalities)
    say(f"case {case.case_id}: {model_name} ({dims}D) from {checkpoint}")
    from brats_ad.data.loading import load_case

    scan = load_case(case, modalities)
    pipeline = run_pipeline(run_cfg, registries)
    processed = pipeline(scan)
    # the cache stores float16: round alike so the model sees what training / the bench see
    image = np.asarray(processed.image, dtype=np.float16).astype(np.float32)
    timing["load_and_preprocess"] = time.perf_counter() - t

    t = time.perf_counter()
    objects, fitted_from = build_scorers(selected, skipped, model, run_cfg, checkpoint, dev, batch,
                                          explicit=scorers is not None, say=say)
    timing["fit_scorers"] = time.perf_counter() - t
    for name, reason in skipped.items():
        say(f"skipped scorer {name!r}: {reason}", always=True)
    if not objects:
        raise ConfigError(
            f"no scorer left to run for model {model_name!r} ({'; '.join(f'{k}: {v}' for k, v in skipped.items()) or 'none registered'}); "
            "install a scorer plugin or pass --scorer NAME"
        )

    t = time.perf_counter()
    say(f"scoring with {', '.join(objects)} on {dev}")
    result = score_volume(model, image, processed.brain_mask, objects, spatial_dims=dims, size=size,
                          batch_size=batch, device=dev, case_id=case.case_id)
    timing["score"] = time.perf_counter() - t

    t = time.perf_counter()
    import nibabel as nib

    reference_file = Path(case.images[modalities[0]])
    reference = nib.load(str(reference_file))
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, volume in result.items():
        on_input = map_back(volume, processed.meta, fill=result.fill[name])
        path = out_dir / f"{case.case_id}_{name}.nii.gz"
        write_map_nifti(path, on_input, reference, description=f"brats-ad {name} {model_name}")
        written[name] = path
    timing["write"] = time.perf_counter() - t
    timing["total"] = time.perf_counter() - t0

    from brats_ad.io import write_json_atomic

    write_json_atomic(out_dir / f"{case.case_id}_predict.json", {
        "case_id": case.case_id,
        "case_dir": str(case_dir.resolve()),
        "input": {"reference": str(reference_file), "files": {m: str(case.images[m]) for m in modalities},
                  "shape": list(reference.shape), "affine": np.asarray(reference.affine).tolist()},
        "checkpoint": str(checkpoint.resolve()),
        "model": model_name,
        "dims": dims,
        "size": size,
        "modalities": list(modalities),
        "pipeline": pipeline.to_config(),
        "pipeline_hash": pipeline.config_hash(),
        "device": str(dev),
        "scorers": {
            name: {
                "file": written[name].name,
                "map_kind": getattr(objects[name], "map_kind", None),
                "volume_score": _finite_or_none(result.volume_scores[name]),
                "sample_scores": [_finite_or_none(v) for v in result.sample_scores[name].tolist()],
                "background": result.fill[name],
                "fitted_from": fitted_from.get(name),
            }
            for name in written
        },
        "skipped_scorers": skipped,
        "model_calls": result.model_calls,
        "timing_s": {k: round(v, 3) for k, v in timing.items()},
        "versions": _versions(),
    })
    say(f"wrote {len(written)} map(s) to {out_dir} in {timing['total']:.1f} s")
    return written


# -- the run folder --------------------------------------------------------------------------------
def read_run_config(checkpoint: Path) -> dict[str, Any]:
    """``train_config.json`` beside ``checkpoint`` (written by ``brats-ad train``)."""
    path = Path(checkpoint).parent / RUN_CONFIG
    if not path.is_file():
        raise ConfigError(
            f"no {RUN_CONFIG} beside checkpoint {checkpoint}; predict needs the training run folder "
            "(checkpoint + train_config.json as 'brats-ad train' writes them) - copy the whole folder"
        )
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); restore it from the training run") from None


def _train_batch(run_cfg: Mapping[str, Any]) -> int | None:
    train = run_cfg.get("train") or {}
    return train.get("val_batch_size") or train.get("batch_size")


def input_modalities(run_cfg: Mapping[str, Any], model: Any) -> tuple[str, ...]:
    """The channels, in order, the model was trained on.

    First the model's own list (``flair-threshold`` stores it), then ``data.modalities``, then
    the dataset's ``modalities`` parameter, then the cache's; else the four BraTS modalities.
    """
    from brats_ad.data.brats import check_modalities
    from brats_ad.data.scan import MODALITIES

    data = run_cfg.get("data") or {}
    mods = getattr(model.config, "modalities", None) or data.get("modalities") \
        or (data.get("dataset_params") or {}).get("modalities") or _cached_modalities(run_cfg) or MODALITIES
    mods = check_modalities(mods)
    channels = getattr(model.config, "in_channels", len(mods))
    if channels != len(mods):
        raise ConfigError(
            f"the model takes {channels} channel(s) but the run's modalities are {list(mods)}; "
            "set data.modalities in the train config and retrain"
        )
    return mods


def _cached_modalities(run_cfg: Mapping[str, Any]) -> tuple[str, ...] | None:
    cache_dir = run_cfg.get("cache_dir")
    if not cache_dir or not Path(cache_dir).is_dir():
        return None
    for meta in sorted(Path(cache_dir).glob("*/meta.json"))[:1]:
        return tuple(json.loads(meta.read_text()).get("modalities") or ()) or None
    return None


def run_pipeline(run_cfg: Mapping[str, Any], registries: "Registries") -> "Pipeline":
    """The training cache's pipeline: its ``pipeline.json`` when present, else the config's spec."""
    from brats_ad.data.prepare import PIPELINE_FILE, resolve_pipeline
    from brats_ad.preprocess.pipeline import build_pipeline

    cache_dir = run_cfg.get("cache_dir")
    saved = Path(cache_dir) / PIPELINE_FILE if cache_dir else None
    if saved is not None and saved.is_file():
        steps = json.loads(saved.read_text()).get("pipeline")
        if steps:
            return build_pipeline(steps, registries)
    data = run_cfg.get("data") or {}
    spec = data.get("pipeline")
    if isinstance(spec, list):
        return build_pipeline(spec, registries)
    return resolve_pipeline(spec, data.get("dataset", "brats"))


def find_case(case_dir: Path, modalities: Sequence[str]) -> Any:
    """The one BraTS case (2021 or 2023 naming) in ``case_dir``."""
    from brats_ad.data.brats import BratsDataset

    cases = BratsDataset(case_dir, modalities=modalities).cases()
    if len(cases) != 1:
        ids = ", ".join(c.case_id for c in cases[:5]) + (", ..." if len(cases) > 5 else "")
        raise DataError(
            f"{case_dir} holds {len(cases)} cases ({ids}), expected one; pass a single case folder "
            "such as BraTS-GLI-00000-000/"
        )
    return cases[0]


# -- output ----------------------------------------------------------------------------------------
def map_back(volume: np.ndarray, meta: Mapping[str, Any], *, fill: float) -> np.ndarray:
    """A processed-grid map on the input grid (linear; outside the processed box: ``fill``)."""
    from brats_ad.preprocess.pipeline import map_to_input_grid

    return np.asarray(map_to_input_grid(volume, meta, order=1, fill=fill), dtype=np.float32)


def write_map_nifti(path: Path, data: np.ndarray, reference: Any, *, description: str = "") -> Path:
    """Write ``data`` as float32 NIfTI with ``reference``'s header, affine, sform and qform; atomic."""
    import nibabel as nib

    data = np.asarray(data, dtype=np.float32)
    ref_shape = tuple(reference.shape[:3])
    if data.shape != ref_shape:
        raise DataError(f"map for {path.name} has shape {data.shape}, the input scan {ref_shape}; this is a bug")
    header = reference.header.copy()
    img = nib.Nifti1Image(data, reference.affine, header=header)
    img.set_data_dtype(np.float32)
    for getter, setter in (("get_sform", img.set_sform), ("get_qform", img.set_qform)):
        matrix, code = getattr(reference.header, getter)(coded=True)
        setter(reference.affine if matrix is None else matrix, int(code))
    hdr = img.header
    hdr.set_slope_inter(1.0, 0.0)
    finite = data[np.isfinite(data)]
    hdr["cal_min"], hdr["cal_max"] = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    hdr["descrip"] = description.encode("ascii", "replace")[:79]
    from brats_ad.io import atomic_path

    with atomic_path(path) as tmp:  # keeps the .nii.gz suffix nibabel reads the format from
        nib.save(img, str(tmp))
    return path


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _versions() -> dict[str, str]:
    import nibabel
    import torch

    out = {"brats_ad": __version__, "python": sys.version.split()[0], "numpy": np.__version__,
           "torch": str(torch.__version__), "nibabel": nibabel.__version__}
    try:
        import monai

        out["monai"] = monai.__version__
    except ImportError:  # pragma: no cover - monai is a dependency
        pass
    return out


class _Say:
    """Progress lines to stderr (rich when available); ``always`` lines print even when quiet."""

    def __init__(self, console: "Console | None", progress: bool) -> None:
        self.console, self.progress = console, progress

    def __call__(self, message: str, *, always: bool = False) -> None:
        if not (self.progress or always):
            return
        if self.console is None:
            try:
                from rich.console import Console

                self.console = Console(stderr=True)
            except ImportError:  # pragma: no cover - rich is a dependency
                print(message, file=sys.stderr)
                return
        self.console.print(message, markup=False, highlight=False)
