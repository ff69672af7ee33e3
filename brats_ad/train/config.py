"""The ``brats-ad train --config FILE`` schema: TOML parsed into frozen dataclasses at load time.

Four tables, every key optional unless marked::

    [data]    dataset, data_dir | cache_dir, pipeline, dataset_params, modalities, dims (2|3),
              slice_size, patch_size, patch_stride, min_brain_fraction, margin, unlabelled,
              split_seed, val, test, split_file
    [model]   name (required), params (table, passed to the registry entry)
    [train]   epochs, batch_size, val_batch_size, num_workers, seed, device, amp, patience,
              min_delta, steps_per_epoch, deterministic, channels_last, compile, pin_memory,
              prefetch_factor, persistent_workers, [train.augmentation] table
    [output]  dir (required)

An unknown key is a :class:`ConfigError` with a did-you-mean; so is a value of the wrong type or
range. Relative paths are taken relative to the working directory. This module imports no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from brats_ad.config import check_int, check_range, did_you_mean, read_toml, reject_unknown, typed
from brats_ad.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("auto", "bf16", "fp16", "none")
UNLABELLED = ("error", "skip", "healthy")


@dataclass(frozen=True)
class AugmentSettings:
    """Random training augmentation (MONAI transforms), per sample, applied to healthy batches.

    Off by default and never applied to training-free models. A probability of 0 turns one
    transform off. Flips default to axis 0 only (left-right in RAS): brains are roughly
    left-right symmetric, not front-back.
    """

    enabled: bool = False
    flip_prob: float = 0.5
    flip_axes: tuple[int, ...] = (0,)
    affine_prob: float = 0.3
    rotate_deg: float = 10.0  # rotations drawn in [-rotate_deg, rotate_deg] per axis
    scale: float = 0.1  # zoom factors drawn in [1 - scale, 1 + scale]
    intensity_prob: float = 0.3
    intensity_scale: float = 0.1  # x * (1 + f), f in [-intensity_scale, intensity_scale]
    intensity_shift: float = 0.0  # x + o, o in [-intensity_shift, intensity_shift]
    contrast_gamma: tuple[float, float] = (0.8, 1.25)  # gamma range; (1, 1) turns it off

    def __post_init__(self) -> None:
        for name in ("flip_prob", "affine_prob", "intensity_prob"):
            check_range(f"augmentation.{name}", getattr(self, name), 0.0, 1.0)
        for name in ("rotate_deg", "scale", "intensity_scale", "intensity_shift"):
            check_range(f"augmentation.{name}", getattr(self, name), 0.0, math.inf)
        if self.scale >= 1.0:
            raise ConfigError(f"augmentation.scale must be < 1 (zoom in [1 - s, 1 + s]), got {self.scale}")
        if any(a not in (0, 1, 2) for a in self.flip_axes):
            raise ConfigError(f"augmentation.flip_axes must be spatial axes 0, 1 or 2, got {list(self.flip_axes)}")
        lo, hi = self.contrast_gamma
        if not 0 < lo <= hi:
            raise ConfigError(
                f"augmentation.contrast_gamma must be [low, high] with 0 < low <= high, got {list(self.contrast_gamma)}"
            )


@dataclass(frozen=True)
class TrainSettings:
    """How the one loop trains any model (see :func:`brats_ad.train.loop.fit`)."""

    epochs: int = 20
    batch_size: int = 32
    val_batch_size: int | None = None  # default: batch_size
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    patience: int | None = 10  # epochs without a better healthy-validation loss; None: never stop early
    min_delta: float = 0.0  # an improvement must beat the best by more than this
    steps_per_epoch: int | None = None  # cap on training steps per epoch (None: the whole set)
    deterministic: bool = False  # deterministic GPU kernels (slower); CPU runs are deterministic anyway
    # GPU throughput (see brats_ad.train.gpu); results equal the defaults' within float tolerance
    channels_last: bool = False  # channels-last model + inputs (fast cuDNN layout under bf16)
    compile: bool = False  # torch.compile the model's networks (not train_step); eager if unavailable
    pin_memory: bool | None = None  # None: on when training on CUDA
    prefetch_factor: int | None = None  # batches each worker loads ahead; None: torch's 2 (needs num_workers > 0)
    persistent_workers: bool | None = None  # None: on when num_workers > 0 (no worker restart per epoch)
    augmentation: AugmentSettings = field(default_factory=AugmentSettings)

    def __post_init__(self) -> None:
        check_int("train.epochs", self.epochs, 1)
        check_int("train.batch_size", self.batch_size, 1)
        if self.val_batch_size is not None:
            check_int("train.val_batch_size", self.val_batch_size, 1)
        check_int("train.num_workers", self.num_workers, 0)
        check_int("train.seed", self.seed, 0)
        if self.patience is not None:
            check_int("train.patience", self.patience, 1)
        if self.steps_per_epoch is not None:
            check_int("train.steps_per_epoch", self.steps_per_epoch, 1)
        check_range("train.min_delta", self.min_delta, 0.0, math.inf)
        if self.prefetch_factor is not None:
            check_int("train.prefetch_factor", self.prefetch_factor, 1)
            if self.num_workers == 0:
                raise ConfigError(
                    f"train.prefetch_factor = {self.prefetch_factor} needs worker processes; "
                    "set train.num_workers > 0 or remove prefetch_factor"
                )
        dev = self.device.strip().lower() if isinstance(self.device, str) else self.device
        if not isinstance(dev, str) or not (dev in DEVICES or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ConfigError(f"train.device must be one of {', '.join(DEVICES)} or 'cuda:N', got {self.device!r}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"train.amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}{did_you_mean(self.amp, AMP_MODES)}")


@dataclass(frozen=True)
class DataSection:
    """Where healthy training samples come from.

    Either ``data_dir`` (raw cases, read by the ``dataset`` plugin and prepared into
    ``cache_dir`` with ``pipeline`` when not cached yet) or ``cache_dir`` alone pointing at a
    prepared cache folder (the ``<root>/<pipeline hash>`` folder holding ``pipeline.json``).
    """

    dataset: str = "brats"
    data_dir: Path | None = None
    cache_dir: Path = Path(".brats-ad-cache")
    pipeline: str | tuple[Mapping[str, Any], ...] | None = None  # None: the dataset's default
    dataset_params: Mapping[str, Any] = field(default_factory=dict)
    modalities: tuple[str, ...] | None = None  # None: every cached modality
    dims: int = 2
    slice_size: int = 128
    patch_size: int = 64
    patch_stride: int | None = None
    min_brain_fraction: float | None = None  # None: the sampler's default
    margin: int = 0
    unlabelled: str = "error"
    split_seed: int = 0
    val: float | int = 0.1
    test: float | int = 0.2
    split_file: Path | None = None  # default: <output.dir>/split.json

    def __post_init__(self) -> None:
        if self.dims not in (2, 3) or isinstance(self.dims, bool):
            raise ConfigError(f"data.dims must be 2 (slices) or 3 (patches), got {self.dims!r}")
        check_int("data.slice_size", self.slice_size, 8)
        check_int("data.patch_size", self.patch_size, 4)
        if self.patch_stride is not None:
            check_int("data.patch_stride", self.patch_stride, 1)
        check_int("data.margin", self.margin, 0)
        check_int("data.split_seed", self.split_seed, 0)
        if self.min_brain_fraction is not None:
            check_range("data.min_brain_fraction", self.min_brain_fraction, 0.0, 1.0)
        if self.unlabelled not in UNLABELLED:
            raise ConfigError(f"data.unlabelled must be one of {', '.join(UNLABELLED)}, got {self.unlabelled!r}")
        for name in ("val", "test"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"data.{name} must be a fraction in [0, 1) or a patient count, got {value!r}")
        if self.val == 0:
            raise ConfigError(
                "data.val is 0: early stopping and model selection need healthy validation patients; "
                "set data.val to e.g. 0.1"
            )


@dataclass(frozen=True)
class ModelSection:
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    """A parsed train TOML; ``source`` is the file it came from (for messages)."""

    data: DataSection
    model: ModelSection
    train: TrainSettings
    output_dir: Path
    source: Path | None = None


# -- parsing ---------------------------------------------------------------------------------------
_TABLES = ("data", "model", "train", "output")


def load_train_config(path: Path | str) -> TrainConfig:
    """Read and validate a train TOML."""
    return parse_train_config(read_toml(path, "train config"), source=Path(path))


def parse_train_config(raw: Mapping[str, Any], *, source: Path | None = None) -> TrainConfig:
    """Validate a dict (as read from TOML) into a :class:`TrainConfig`."""
    where = f"train config {source}: " if source else "train config: "
    try:
        reject_unknown(raw, _TABLES, "top-level table")
        for table in ("model", "output"):
            if table not in raw:
                raise ConfigError(f"missing [{table}] table" + (" with 'name'" if table == "model" else " with 'dir'"))
        data = parse_data_section(_table(raw, "data"))
        model = _parse_model(_table(raw, "model"))
        train = parse_train_section(_table(raw, "train"))
        output = _table(raw, "output")
        reject_unknown(output, ("dir",), "key in [output]")
        if not isinstance(output.get("dir"), str) or not output["dir"]:
            raise ConfigError(f"[output] needs dir = \"FOLDER\" (a string), got {output.get('dir')!r}")
    except ConfigError as exc:
        raise ConfigError(where + str(exc)) from None
    return TrainConfig(data=data, model=model, train=train, output_dir=Path(output["dir"]), source=source)


def _table(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{name}] must be a table, got {type(value).__name__}")
    return value


def parse_data_section(raw: Mapping[str, Any]) -> DataSection:
    known = [f.name for f in fields(DataSection)]
    reject_unknown(raw, known, "key in [data]")
    kw: dict[str, Any] = dict(raw)
    for key in ("data_dir", "cache_dir", "split_file"):
        if key in kw:
            kw[key] = Path(typed(f"data.{key}", kw[key], str))
    if "dataset" in kw:
        typed("data.dataset", kw["dataset"], str)
    if "pipeline" in kw:
        pipe = kw["pipeline"]
        if isinstance(pipe, list):
            if not all(isinstance(s, Mapping) and isinstance(s.get("name"), str) for s in pipe):
                raise ConfigError("data.pipeline steps must be tables with a 'name', e.g. [{name = \"orient\"}]")
            kw["pipeline"] = tuple(dict(s) for s in pipe)
        else:
            typed("data.pipeline", pipe, str)
    if "dataset_params" in kw:
        kw["dataset_params"] = dict(typed("data.dataset_params", kw["dataset_params"], Mapping))
    if "modalities" in kw:
        mods = kw["modalities"]
        if isinstance(mods, str):
            mods = [mods]
        if not isinstance(mods, list) or not mods or not all(isinstance(m, str) for m in mods):
            raise ConfigError(f"data.modalities must be a list of names like [\"flair\"], got {kw['modalities']!r}")
        from brats_ad.data.scan import canonical_modality

        kw["modalities"] = tuple(canonical_modality(m) for m in mods)
    for key in ("min_brain_fraction",):
        if key in kw:
            kw[key] = float(typed(f"data.{key}", kw[key], (int, float)))
    for key in ("dims", "slice_size", "patch_size", "patch_stride", "margin", "split_seed"):
        if key in kw:
            typed(f"data.{key}", kw[key], int)
    for key in ("val", "test"):
        if key in kw:
            typed(f"data.{key}", kw[key], (int, float))
    if "unlabelled" in kw:
        typed("data.unlabelled", kw["unlabelled"], str)
    return DataSection(**kw)


def _parse_model(raw: Mapping[str, Any]) -> ModelSection:
    reject_unknown(raw, ("name", "params"), "key in [model]")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"[model] needs name = \"MODEL\" (see 'brats-ad plugins --kind models'), got {name!r}")
    params = raw.get("params", {})
    if not isinstance(params, Mapping):
        raise ConfigError(f"model.params must be a table, got {type(params).__name__}")
    return ModelSection(name=name, params=dict(params))


def parse_train_section(raw: Mapping[str, Any]) -> TrainSettings:
    known = [f.name for f in fields(TrainSettings)]
    reject_unknown(raw, known, "key in [train]")
    kw: dict[str, Any] = dict(raw)
    types: dict[str, Any] = {
        "epochs": int, "batch_size": int, "val_batch_size": int, "num_workers": int, "seed": int,
        "device": str, "amp": str, "patience": int, "min_delta": (int, float),
        "steps_per_epoch": int, "deterministic": bool, "channels_last": bool, "compile": bool,
        "pin_memory": bool, "prefetch_factor": int, "persistent_workers": bool,
    }
    for key, typ in types.items():
        if key in kw:
            typed(f"train.{key}", kw[key], typ)
    if kw.get("patience") == 0:  # 0 reads naturally as "off" in a TOML file
        kw["patience"] = None
    if "augmentation" in kw:
        kw["augmentation"] = _parse_augmentation(typed("train.augmentation", kw["augmentation"], Mapping))
    return TrainSettings(**kw)


def _parse_augmentation(raw: Mapping[str, Any]) -> AugmentSettings:
    known = [f.name for f in fields(AugmentSettings)]
    reject_unknown(raw, known, "key in [train.augmentation]")
    kw: dict[str, Any] = dict(raw)
    if "enabled" in kw:
        typed("augmentation.enabled", kw["enabled"], bool)
    for key in ("flip_prob", "affine_prob", "rotate_deg", "scale", "intensity_prob", "intensity_scale", "intensity_shift"):
        if key in kw:
            kw[key] = float(typed(f"augmentation.{key}", kw[key], (int, float)))
    if "flip_axes" in kw:
        axes = kw["flip_axes"]
        if not isinstance(axes, list) or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
            raise ConfigError(f"augmentation.flip_axes must be a list of ints like [0], got {axes!r}")
        kw["flip_axes"] = tuple(axes)
    if "contrast_gamma" in kw:
        g = kw["contrast_gamma"]
        if not isinstance(g, list) or len(g) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in g):
            raise ConfigError(f"augmentation.contrast_gamma must be [low, high], got {g!r}")
        kw["contrast_gamma"] = (float(g[0]), float(g[1]))
    return AugmentSettings(**kw)
