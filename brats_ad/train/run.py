"""``brats-ad train --config FILE``: prepare (if needed), split, sample healthy data, build, train.

One library function, :func:`train_from_config`, so the CLI stays a thin wrapper. Training and
validation datasets hold healthy samples only (``SliceDataset`` / ``PatchDataset``); test cases
are set aside by the split and never opened here.

Under ``torchrun`` every process runs this function: rank 0 prepares the cache and writes the
split first (the others then read what it wrote), trains with the others, and writes the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from brats_ad.errors import ConfigError, DataError
from brats_ad.train.config import DataSection, TrainConfig, load_train_config

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from brats_ad.train.distributed import DistContext

#: Model parameters the data decides; filled in when the model's registry entry declares them.
_SIZE_KEYS = ("image_size", "input_size", "size")


def train_from_config(
    path: Path | str,
    *,
    progress: bool = True,
    resume: bool = True,
    console: "Console | None" = None,
    registries: Any = None,
) -> Path:
    """Train the model a train TOML describes; return the checkpoint to use (``best.pt``).

    Rerunning with the same config resumes from ``last.pt``. ``registries`` defaults to the
    process's plugin registries (:func:`brats_ad.plugins.get_registries`).
    """
    cfg = load_train_config(path)
    if registries is None:
        from brats_ad.plugins import get_registries

        registries = get_registries()
    entry = registries.models.get(cfg.model.name)  # unknown model: fail before any data work
    if cfg.data.dims not in entry.dims:
        raise ConfigError(
            f"model {entry.name!r} supports dims {sorted(entry.dims)}, config asks for data.dims = "
            f"{cfg.data.dims}; change data.dims or the model"
        )
    from brats_ad.train.distributed import session

    with session(cfg.train.device) as dist:
        return _train(cfg, entry, registries, dist, progress=progress, resume=resume, console=console)


def _train(cfg: TrainConfig, entry: Any, registries: Any, dist: "DistContext", *, progress: bool, resume: bool,
           console: "Console | None") -> Path:
    progress = progress and dist.is_main
    with dist.main_first():  # one process prepares and splits; the others find it done
        cache_dir = _cache_dir(cfg, registries, progress=progress, console=console)
        split = _split(cfg, cache_dir)
    train_ds = healthy_dataset(cfg.data, cache_dir, split.train)
    val_ds = healthy_dataset(cfg.data, cache_dir, split.val)
    if len(val_ds) == 0:
        raise DataError(
            f"no healthy validation samples in the {len(split.val)} validation case(s) of {cache_dir}; "
            "raise data.val or lower data.min_brain_fraction"
        )
    params = resolve_model_params(cfg, entry, tuple(train_ds.modalities))

    from brats_ad.train.device import seed_everything
    from brats_ad.train.loop import fit

    seed_everything(cfg.train.seed)  # weight initialisation is part of the seeded run
    model = entry.load()(**params)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if dist.is_main:
        write_run_config(out / "train_config.json", cfg, cache_dir, split, params, len(train_ds), len(val_ds))
    result = fit(model, train_ds, val_ds, out, name=entry.name, settings=cfg.train,
                 progress=progress, resume=resume, console=console)
    return result.checkpoint


def _cache_dir(cfg: TrainConfig, registries: Any, *, progress: bool, console: Any) -> Path:
    """The prepared cache folder: prepare ``data_dir`` into ``cache_dir`` first when given."""
    from brats_ad.data.prepare import PIPELINE_FILE, prepare_dataset, resolve_pipeline

    data = cfg.data
    if data.data_dir is None:
        if not (data.cache_dir / PIPELINE_FILE).is_file():
            raise DataError(
                f"data.cache_dir {data.cache_dir} is not a prepared cache folder (no {PIPELINE_FILE}); "
                "set data.data_dir to prepare one, or point cache_dir at <cache root>/<pipeline hash>"
            )
        return data.cache_dir
    if not data.data_dir.is_dir() and data.dataset != "synthetic":
        raise DataError(f"data.data_dir {data.data_dir} does not exist; point it at your dataset folder")
    ds_entry = registries.datasets.get(data.dataset)
    overrides = dict(data.dataset_params)
    if data.modalities is not None and "modalities" in ds_entry.params and "modalities" not in overrides:
        overrides["modalities"] = data.modalities
    dataset = ds_entry.load()(data.data_dir, **ds_entry.resolve_params(overrides))
    cases = dataset.cases()
    if not cases:
        raise DataError(f"no cases found in {data.data_dir} by dataset {data.dataset!r}; check data.data_dir")
    if isinstance(data.pipeline, tuple):
        from brats_ad.preprocess.pipeline import build_pipeline

        pipeline = build_pipeline([dict(step) for step in data.pipeline], registries)
    else:
        pipeline = resolve_pipeline(data.pipeline, data.dataset)
    summary = prepare_dataset(cases, pipeline, data.cache_dir, modalities=data.modalities,
                              progress=progress, console=console)
    return summary.cache_dir


def _split(cfg: TrainConfig, cache_dir: Path) -> Any:
    from brats_ad.data.cache import cache_index
    from brats_ad.data.splits import load_or_create_split, strata_from_cache

    ids = cache_index(cache_dir)
    if not ids:
        raise DataError(f"cache {cache_dir} holds no complete case; run 'brats-ad prepare' first")
    split_file = cfg.data.split_file or (Path(cfg.output_dir) / "split.json")
    return load_or_create_split(split_file, ids, seed=cfg.data.split_seed, val=cfg.data.val,
                                test=cfg.data.test, strata=strata_from_cache(cache_dir, ids))


def healthy_dataset(data: DataSection, cache_dir: Path, case_ids: Any) -> Any:
    """Healthy-only slices (dims 2) or patches (dims 3) of ``case_ids``: image tensors, no labels."""
    from brats_ad.data.cache import open_cache
    from brats_ad.data.samplers import PatchDataset, SliceDataset

    if not case_ids:
        raise DataError(f"the split gives no cases for this part of {cache_dir}; adjust data.val / data.test")
    cases = open_cache(cache_dir, case_ids)
    common: dict[str, Any] = {"modalities": data.modalities, "margin": data.margin, "unlabelled": data.unlabelled}
    if data.min_brain_fraction is not None:
        common["min_brain_fraction"] = data.min_brain_fraction
    if data.dims == 2:
        return SliceDataset(cases, size=data.slice_size, **common)
    return PatchDataset(cases, size=data.patch_size, stride=data.patch_stride, seed=data.split_seed, **common)


def resolve_model_params(cfg: TrainConfig, entry: Any, modalities: tuple[str, ...]) -> dict[str, Any]:
    """User params plus what the data decides (spatial_dims, in_channels, modalities, image size)."""
    size = cfg.data.slice_size if cfg.data.dims == 2 else cfg.data.patch_size
    derived: dict[str, Any] = {"spatial_dims": cfg.data.dims, "in_channels": len(modalities),
                               "modalities": modalities}
    derived.update({key: size for key in _SIZE_KEYS})
    params = dict(cfg.model.params)
    for key, value in derived.items():
        if key not in entry.params:
            continue
        if key in params and _as_tuple(params[key]) != _as_tuple(value):
            raise ConfigError(
                f"model.params.{key} = {params[key]!r} but the data gives {value!r} "
                f"({'data.dims' if key == 'spatial_dims' else 'data.modalities' if key in ('in_channels', 'modalities') else 'the slice / patch size'}); "
                f"remove model.params.{key} or change [data]"
            )
        params[key] = value
    return entry.resolve_params(params)


def write_run_config(path: Path, cfg: TrainConfig, cache_dir: Path, split: Any, params: dict[str, Any],
                      n_train: int, n_val: int) -> None:
    """The resolved run (config, cache, split hash, sample counts) beside the checkpoints."""
    from brats_ad.io import write_json_atomic
    from brats_ad.train.checkpoint import plain

    write_json_atomic(path, {
        "source": str(cfg.source) if cfg.source else None,
        "data": plain(cfg.data),
        "model": {"name": cfg.model.name, "params": plain(params)},
        "train": plain(cfg.train),
        "output_dir": str(cfg.output_dir),
        "cache_dir": str(cache_dir),
        "split_hash": split.hash,
        "train_samples": n_train,
        "val_samples": n_val,
    })


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
