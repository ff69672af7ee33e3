"""The benchmark TOML: parsed into frozen dataclasses at load time, checked before any work.

Tables (see ``brats_ad/bench/configs/default.toml`` for a commented example)::

    [bench]       name, out (output folder; --out overrides)
    [dataset]     name (dataset plugin), root (--data overrides), cache, params, modalities,
                  pipeline (a name or a list of {name = step, ...} tables)
    [split]       seed, val, test (patients: a fraction < 1 or a count)
    [training]    strategy ("tumour-free" | "healthy-controls"), every [train] key of
                  ``brats-ad train`` (epochs, batch_size, steps_per_epoch, device, amp, ...)
    [training.healthy]   healthy-controls only: dataset, root, cache, params, pipeline, val, seed
    [sampler.2d]  size, min_brain_fraction, margin       (axial slices)
    [sampler.3d]  size, stride, min_brain_fraction, margin   (patches)
    [matrix]      dims ([2], [3] or [2, 3]), seeds
    [[models]]    name, params, dims (optional subset), training (optional per-model overrides)
    [[scorers]]   name, params, grid (lists of values, e.g. alpha / beta; one cell per combination)
    [evaluation]  healthy_quantile, bootstrap, bootstrap_level, bootstrap_seed, curve_points,
                  gallery_slices, batch_size, overlap, blend, min_brain_fraction, fit_max_samples
    [executor]    name ("local" | "slurm" | a plugin's), then that executor's parameters
                  (local: workers; slurm: partition, gpus_per_node, cpus_per_task, timeout_min,
                  mem_gb, array_parallelism, additional, setup, ...); --executor etc. override

An unknown key is a :class:`ConfigError` with a did-you-mean and the allowed keys; names of
plugins are checked against the registries by :func:`validate` (which also builds every model
and scorer variant once, so a bad value fails before any data is touched). No torch here.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from brats_ad.errors import BratsAdError, ConfigError
from brats_ad.config import check_int, did_you_mean, read_toml, reject_unknown, typed
from brats_ad.io import jsonable
from brats_ad.train.config import TrainSettings, parse_train_section

STRATEGIES = ("tumour-free", "healthy-controls")
BLENDS = ("gaussian", "constant")
#: Model parameters the data decides (filled in per cell; a config must not set them).
DATA_PARAMS = ("spatial_dims", "in_channels", "modalities", "image_size", "input_size", "size")

_TOP = ("bench", "dataset", "split", "training", "sampler", "matrix", "models", "scorers", "evaluation", "executor")


@dataclass(frozen=True)
class DatasetSection:
    """Where the cases come from and how they are preprocessed into the cache."""

    name: str = "synthetic"
    root: Path = Path("data/synthetic")
    cache: Path | None = None  # default: <out>/cache
    params: Mapping[str, Any] = field(default_factory=dict)
    modalities: tuple[str, ...] | None = None  # None: the dataset plugin's default
    pipeline: str | tuple[Mapping[str, Any], ...] | None = None  # None: the dataset's default
    max_cases: int | None = None  # a seeded subset of this many patients (None: every case)
    workers: int | None = None  # preparation processes; None: up to 8 for 32+ cases, else 1


@dataclass(frozen=True)
class SplitSection:
    seed: int = 0
    val: float | int = 0.1
    test: float | int = 0.2


@dataclass(frozen=True)
class HealthySection:
    """Healthy-control scans for ``strategy = "healthy-controls"`` (BraTS is then val + test)."""

    dataset: str = "healthy"
    root: Path | None = None
    cache: Path | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    pipeline: str | tuple[Mapping[str, Any], ...] | None = "healthy"
    val: float | int = 0.2
    seed: int = 0


@dataclass(frozen=True)
class SamplerSection:
    """Slices (dims 2) or patches (dims 3); ``size`` is the slice edge or the patch edge."""

    size: int
    stride: int | None = None  # 3D only
    min_brain_fraction: float | None = None  # None: the sampler's default
    margin: int = 0


@dataclass(frozen=True)
class ModelSpec:
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    dims: tuple[int, ...] | None = None  # None: every matrix dim the model supports
    training: Mapping[str, Any] = field(default_factory=dict)  # per-model [training] overrides


@dataclass(frozen=True)
class ScorerSpec:
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def variants(self) -> list[dict[str, Any]]:
        """``params`` updated with each combination of the grid (in grid-key order)."""
        if not self.grid:
            return [dict(self.params)]
        keys = list(self.grid)
        return [{**self.params, **dict(zip(keys, combo))} for combo in itertools.product(*(self.grid[k] for k in keys))]


@dataclass(frozen=True)
class EvaluationSection:
    healthy_quantile: float = 0.995
    bootstrap: int = 1000
    bootstrap_level: float = 0.95
    bootstrap_seed: int = 0
    curve_points: int = 200
    gallery_slices: int = 3
    batch_size: int | None = None  # inference batch; None: score_volume's default
    overlap: float = 0.5  # 3D sliding windows
    blend: str = "gaussian"
    min_brain_fraction: float = 0.1  # slices / windows with less brain are not scored
    fit_max_samples: int = 512  # healthy validation samples for scorers that fit statistics
    min_component_size: int = 0  # Dice: drop predicted components smaller than this after thresholding

    def __post_init__(self) -> None:
        if not 0.0 < self.healthy_quantile < 1.0:
            raise ConfigError(f"evaluation.healthy_quantile must be in (0, 1), e.g. 0.995; got {self.healthy_quantile!r}")
        check_int("evaluation.bootstrap", self.bootstrap, 1)
        if not 0.0 < self.bootstrap_level < 1.0:
            raise ConfigError(f"evaluation.bootstrap_level must be in (0, 1), e.g. 0.95; got {self.bootstrap_level!r}")
        check_int("evaluation.bootstrap_seed", self.bootstrap_seed, 0)
        check_int("evaluation.curve_points", self.curve_points, 2)
        check_int("evaluation.gallery_slices", self.gallery_slices, 0)
        if self.batch_size is not None:
            check_int("evaluation.batch_size", self.batch_size, 1)
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"evaluation.overlap must be in [0, 1), got {self.overlap!r}")
        if self.blend not in BLENDS:
            raise ConfigError(f"evaluation.blend must be one of {', '.join(BLENDS)}, got {self.blend!r}")
        if not 0.0 <= self.min_brain_fraction <= 1.0:
            raise ConfigError(f"evaluation.min_brain_fraction must be in [0, 1], got {self.min_brain_fraction!r}")
        check_int("evaluation.fit_max_samples", self.fit_max_samples, 1)
        check_int("evaluation.min_component_size", self.min_component_size, 0)


@dataclass(frozen=True)
class ExecutorSection:
    """Where the units run; ``params`` are checked against the executor's registered defaults
    when it is built (:func:`brats_ad.bench.executors.make_executor`). Not part of any hash:
    where a cell runs does not change its numbers."""

    name: str = "local"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchConfig:
    """A parsed benchmark TOML; ``source`` is the file it came from (for messages)."""

    name: str
    out: Path
    dataset: DatasetSection
    split: SplitSection
    strategy: str
    training: Mapping[str, Any]  # raw [training] keys for TrainSettings (validated)
    healthy: HealthySection | None
    samplers: Mapping[int, SamplerSection]
    dims: tuple[int, ...]
    seeds: tuple[int, ...]
    models: tuple[ModelSpec, ...]
    scorers: tuple[ScorerSpec, ...]
    evaluation: EvaluationSection
    source: Path | None = None
    executor: ExecutorSection = field(default_factory=ExecutorSection)

    @property
    def cache_root(self) -> Path:
        return self.dataset.cache if self.dataset.cache is not None else self.out / "cache"

    def train_settings(self, model: ModelSpec, seed: int) -> TrainSettings:
        """[training] updated with the model's own overrides; the matrix seed is the train seed."""
        raw = {**self.training, **model.training, "seed": seed}
        return parse_train_section(raw)

    def with_overrides(self, *, data: Path | None = None, out: Path | None = None, executor: str | None = None,
                       executor_params: Mapping[str, Any] | None = None,
                       dataset: str | None = None, max_cases: int | None = None) -> "BenchConfig":
        """The CLI's ``--data``, ``--dataset``, ``--max-cases``, ``--out``, ``--executor`` and executor flags.

        Naming another dataset plugin drops ``[dataset] params`` (they belong to the old one);
        naming another executor than the config's drops the config's executor parameters.
        """
        cfg = self
        if data is not None:
            cfg = replace(cfg, dataset=replace(cfg.dataset, root=Path(data)))
        if dataset is not None and dataset != cfg.dataset.name:
            cfg = replace(cfg, dataset=replace(cfg.dataset, name=dataset, params={}))
        if max_cases is not None:
            check_int("--max-cases", max_cases, 1)
            cfg = replace(cfg, dataset=replace(cfg.dataset, max_cases=max_cases))
        if out is not None:
            cfg = replace(cfg, out=Path(out))
        if executor is not None or executor_params:
            name = executor if executor is not None else cfg.executor.name
            base = dict(cfg.executor.params) if name == cfg.executor.name else {}
            base.update({k: v for k, v in (executor_params or {}).items() if v is not None})
            cfg = replace(cfg, executor=ExecutorSection(name, base))
        return cfg

    def protocol_dict(self) -> dict[str, Any]:
        """Everything but paths and the matrix axes: what a cell's numbers depend on."""
        return {
            "dataset": {"name": self.dataset.name, "params": jsonable(self.dataset.params),
                        "modalities": jsonable(self.dataset.modalities), "pipeline": jsonable(self.dataset.pipeline),
                        "max_cases": self.dataset.max_cases},
            "split": jsonable(self.split.__dict__),
            "strategy": self.strategy,
            "healthy": None if self.healthy is None else {
                "dataset": self.healthy.dataset, "params": jsonable(self.healthy.params),
                "pipeline": jsonable(self.healthy.pipeline), "val": self.healthy.val, "seed": self.healthy.seed},
            "evaluation": jsonable(self.evaluation.__dict__),
        }

    def config_hash(self) -> str:
        """Short hash of the whole normalised config (paths excluded)."""
        payload = {**self.protocol_dict(), "training": jsonable(self.training),
                   "samplers": {str(k): jsonable(v.__dict__) for k, v in self.samplers.items()},
                   "dims": list(self.dims), "seeds": list(self.seeds),
                   "models": [jsonable(m.__dict__) for m in self.models],
                   "scorers": [jsonable(s.__dict__) for s in self.scorers]}
        return stable_hash(payload)


# -- loading ---------------------------------------------------------------------------------------
def default_config_path() -> Path:
    """The shipped default (package data, so a pip-installed user has it too)."""
    from importlib.resources import files

    return Path(str(files("brats_ad.bench").joinpath("configs/default.toml")))


def load_bench_config(path: Path | str | None = None) -> BenchConfig:
    """Read and parse a benchmark TOML (the packaged ``default.toml`` when ``path`` is None)."""
    path = default_config_path() if path is None else Path(path)
    return parse_bench_config(read_toml(path, "bench config"), source=path)


def parse_bench_config(raw: Mapping[str, Any], *, source: Path | None = None) -> BenchConfig:
    """Validate a dict (as read from TOML) into a :class:`BenchConfig` (no registry lookups)."""
    where = f"bench config {source}: " if source else "bench config: "
    try:
        return _parse(raw, source)
    except ConfigError as exc:
        raise ConfigError(where + str(exc)) from None


def _parse(raw: Mapping[str, Any], source: Path | None) -> BenchConfig:
    reject_unknown(raw, _TOP, "top-level table")
    bench = _table(raw, "bench")
    reject_unknown(bench, ("name", "out"), "key in [bench]")
    name = typed("bench.name", bench.get("name", source.stem if source else "bench"), str)
    out = Path(typed("bench.out", bench.get("out", f"runs/bench/{name}"), str))

    dataset = _parse_dataset(_table(raw, "dataset"))
    split = _parse_split(_table(raw, "split"))

    training = dict(_table(raw, "training"))
    strategy = typed("training.strategy", training.pop("strategy", "tumour-free"), str)
    if strategy not in STRATEGIES:
        raise ConfigError(f"training.strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    healthy_raw = training.pop("healthy", None)
    if "seed" in training:
        raise ConfigError("training.seed is set by [matrix] seeds; remove it and list seeds = [...] in [matrix]")
    parse_train_section(training)  # unknown keys, types and ranges now
    healthy = None
    if strategy == "healthy-controls":
        if healthy_raw is None:
            raise ConfigError('training.strategy = "healthy-controls" needs a [training.healthy] table with root = "FOLDER"')
        healthy = _parse_healthy(typed("training.healthy", healthy_raw, Mapping))
    elif healthy_raw is not None:
        raise ConfigError('[training.healthy] is used only with strategy = "healthy-controls"; remove it or set the strategy')

    matrix = _table(raw, "matrix")
    reject_unknown(matrix, ("dims", "seeds"), "key in [matrix]")
    dims = _int_list("matrix.dims", matrix.get("dims", [2]), allowed=(2, 3))
    seeds = _int_list("matrix.seeds", matrix.get("seeds", [0]), minimum=0)
    samplers = _parse_samplers(_table(raw, "sampler"), dims)

    models = tuple(_parse_model(i, m, dims) for i, m in enumerate(_array(raw, "models")))
    scorers = tuple(_parse_scorer(i, s) for i, s in enumerate(_array(raw, "scorers")))
    for spec in models:
        parse_train_section({**training, **spec.training})  # the merged settings must be valid too
    evaluation = _parse_evaluation(_table(raw, "evaluation"))
    executor = _parse_executor(_table(raw, "executor"))
    return BenchConfig(name=name, out=out, dataset=dataset, split=split, strategy=strategy,
                       training=training, healthy=healthy, samplers=samplers, dims=dims, seeds=seeds,
                       models=models, scorers=scorers, evaluation=evaluation, source=source, executor=executor)


def _parse_executor(raw: Mapping[str, Any]) -> ExecutorSection:
    params = dict(raw)
    name = typed("executor.name", params.pop("name", "local"), str)
    return ExecutorSection(name=name, params=params)


def _table(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{name}] must be a table, got {type(value).__name__}")
    return value


def _array(raw: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    value = raw.get(name)
    if value is None:
        raise ConfigError(f"no [[{name}]] entries; add at least one, e.g. [[{name}]] name = \"...\" (see 'brats-ad plugins')")
    if not isinstance(value, list) or not value or not all(isinstance(v, Mapping) for v in value):
        raise ConfigError(f"{name} must be an array of tables ([[{name}]] blocks), got {value!r}")
    return value


def _int_list(name: str, value: Any, *, allowed: tuple[int, ...] | None = None, minimum: int | None = None) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{name} must be a non-empty list of integers, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{name} lists a value twice: {value!r}; list each once")
    for v in value:
        if allowed is not None and v not in allowed:
            raise ConfigError(f"{name} may hold only {', '.join(map(str, allowed))} (2: slices, 3: patches), got {v!r}")
        if minimum is not None and v < minimum:
            raise ConfigError(f"{name} values must be >= {minimum}, got {v!r}")
    return tuple(value)


def _pipeline(name: str, value: Any) -> str | tuple[Mapping[str, Any], ...]:
    if isinstance(value, list):
        if not value or not all(isinstance(s, Mapping) and isinstance(s.get("name"), str) for s in value):
            raise ConfigError(f"{name} steps must be tables with a 'name', e.g. [{{name = \"orient\"}}], got {value!r}")
        return tuple(dict(s) for s in value)
    return typed(name, value, str)


def _modalities(name: str, value: Any) -> tuple[str, ...]:
    from brats_ad.data.scan import canonical_modality

    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(m, str) for m in value):
        raise ConfigError(f"{name} must be a list of names like [\"flair\"], got {value!r}")
    return tuple(canonical_modality(m) for m in value)


def _parse_dataset(raw: Mapping[str, Any]) -> DatasetSection:
    reject_unknown(raw, [f.name for f in fields(DatasetSection)], "key in [dataset]")
    kw: dict[str, Any] = {}
    if "name" in raw:
        kw["name"] = typed("dataset.name", raw["name"], str)
    for key in ("root", "cache"):
        if key in raw:
            kw[key] = Path(typed(f"dataset.{key}", raw[key], str))
    if "params" in raw:
        kw["params"] = dict(typed("dataset.params", raw["params"], Mapping))
        if "modalities" in kw["params"]:
            raise ConfigError("set the modalities in dataset.modalities, not dataset.params.modalities")
    if "modalities" in raw:
        kw["modalities"] = _modalities("dataset.modalities", raw["modalities"])
    if "pipeline" in raw:
        kw["pipeline"] = _pipeline("dataset.pipeline", raw["pipeline"])
    for key in ("max_cases", "workers"):
        if key in raw:
            check_int(f"dataset.{key}", raw[key], 1)
            kw[key] = raw[key]
    return DatasetSection(**kw)


def _size(name: str, value: Any) -> float | int:
    typed(name, value, (int, float))
    if value < 0 or (isinstance(value, float) and not value.is_integer() and value >= 1):
        raise ConfigError(f"{name} must be a fraction in [0, 1) or a patient count >= 0, got {value!r}")
    return value


def _parse_split(raw: Mapping[str, Any]) -> SplitSection:
    reject_unknown(raw, ("seed", "val", "test"), "key in [split]")
    kw: dict[str, Any] = {}
    if "seed" in raw:
        check_int("split.seed", raw["seed"], 0)
        kw["seed"] = raw["seed"]
    for key in ("val", "test"):
        if key in raw:
            kw[key] = _size(f"split.{key}", raw[key])
    split = SplitSection(**kw)
    if split.val == 0 or split.test == 0:
        raise ConfigError(
            f"split.val and split.test must both be > 0 (validation picks thresholds without test labels; "
            f"test is what is reported), got val={split.val!r}, test={split.test!r}"
        )
    return split


def _parse_healthy(raw: Mapping[str, Any]) -> HealthySection:
    reject_unknown(raw, [f.name for f in fields(HealthySection)], "key in [training.healthy]")
    kw: dict[str, Any] = {}
    if "dataset" in raw:
        kw["dataset"] = typed("training.healthy.dataset", raw["dataset"], str)
    for key in ("root", "cache"):
        if key in raw:
            kw[key] = Path(typed(f"training.healthy.{key}", raw[key], str))
    if "params" in raw:
        kw["params"] = dict(typed("training.healthy.params", raw["params"], Mapping))
    if "pipeline" in raw:
        kw["pipeline"] = _pipeline("training.healthy.pipeline", raw["pipeline"])
    if "val" in raw:
        kw["val"] = _size("training.healthy.val", raw["val"])
        if kw["val"] == 0:
            raise ConfigError("training.healthy.val must be > 0: early stopping needs healthy validation scans")
    if "seed" in raw:
        check_int("training.healthy.seed", raw["seed"], 0)
        kw["seed"] = raw["seed"]
    section = HealthySection(**kw)
    if section.root is None:
        raise ConfigError("[training.healthy] needs root = \"FOLDER\" with the healthy-control scans")
    return section


def _parse_samplers(raw: Mapping[str, Any], dims: tuple[int, ...]) -> dict[int, SamplerSection]:
    reject_unknown(raw, ("2d", "3d"), "table in [sampler] (use [sampler.2d] / [sampler.3d])")
    out: dict[int, SamplerSection] = {}
    defaults = {2: 128, 3: 64}
    for dim in (2, 3):
        key = f"{dim}d"
        table = raw.get(key, {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"[sampler.{key}] must be a table, got {type(table).__name__}")
        allowed = ("size", "min_brain_fraction", "margin") + (("stride",) if dim == 3 else ())
        reject_unknown(table, allowed, f"key in [sampler.{key}]")
        size = table.get("size", defaults[dim])
        check_int(f"sampler.{key}.size", size, 8 if dim == 2 else 4)
        stride = table.get("stride")
        if stride is not None:
            check_int(f"sampler.{key}.stride", stride, 1)
        mbf = table.get("min_brain_fraction")
        if mbf is not None:
            typed(f"sampler.{key}.min_brain_fraction", mbf, (int, float))
            if not 0.0 <= mbf <= 1.0:
                raise ConfigError(f"sampler.{key}.min_brain_fraction must be in [0, 1], got {mbf!r}")
            mbf = float(mbf)
        margin = table.get("margin", 0)
        check_int(f"sampler.{key}.margin", margin, 0)
        out[dim] = SamplerSection(size=size, stride=stride, min_brain_fraction=mbf, margin=margin)
    return out


def _parse_model(i: int, raw: Mapping[str, Any], matrix_dims: tuple[int, ...]) -> ModelSpec:
    where = f"models[{i}]"
    reject_unknown(raw, ("name", "params", "dims", "training"), f"key in {where}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where} needs name = \"MODEL\" (see 'brats-ad plugins --kind models'), got {name!r}")
    params = dict(typed(f"{where}.params ({name})", raw.get("params", {}), Mapping))
    for key in DATA_PARAMS:
        if key in params:
            raise ConfigError(
                f"{where} ({name}): params.{key} is set from the data ([dataset] modalities, [matrix] dims, "
                f"[sampler] size); remove it"
            )
    dims = None
    if "dims" in raw:
        dims = _int_list(f"{where}.dims ({name})", raw["dims"], allowed=(2, 3))
        outside = [d for d in dims if d not in matrix_dims]
        if outside:
            raise ConfigError(
                f"{where} ({name}): dims {list(dims)} include {outside[0]}, which is not in matrix.dims "
                f"{list(matrix_dims)}; add it to [matrix] dims or remove it here"
            )
    training = dict(typed(f"{where}.training ({name})", raw.get("training", {}), Mapping))
    if "seed" in training or "strategy" in training or "healthy" in training:
        raise ConfigError(f"{where} ({name}): training may override loop settings only (epochs, batch_size, ...), not seed / strategy")
    return ModelSpec(name=name, params=params, dims=dims, training=training)


def _parse_scorer(i: int, raw: Mapping[str, Any]) -> ScorerSpec:
    where = f"scorers[{i}]"
    reject_unknown(raw, ("name", "params", "grid"), f"key in {where}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where} needs name = \"SCORER\" (see 'brats-ad plugins --kind scorers'), got {name!r}")
    params = dict(typed(f"{where}.params ({name})", raw.get("params", {}), Mapping))
    grid_raw = typed(f"{where}.grid ({name})", raw.get("grid", {}), Mapping)
    grid: dict[str, tuple[Any, ...]] = {}
    for key, values in grid_raw.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where} ({name}): grid.{key} must be a non-empty list of values, got {values!r}")
        if key in params:
            raise ConfigError(f"{where} ({name}): {key!r} is in both params and grid; keep it in one")
        if key in ("alpha", "beta"):
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                    raise ConfigError(f"{where} ({name}): grid.{key} values must be finite numbers >= 0, got {v!r}")
            if len(set(values)) != len(values):
                raise ConfigError(f"{where} ({name}): grid.{key} lists a value twice: {values!r}")
        grid[key] = tuple(float(v) if key in ("alpha", "beta") else v for v in values)
    for key in ("alpha", "beta"):
        v = params.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
            raise ConfigError(f"{where} ({name}): params.{key} must be a finite number >= 0, got {v!r}")
    return ScorerSpec(name=name, params=params, grid=grid)


def _parse_evaluation(raw: Mapping[str, Any]) -> EvaluationSection:
    known = [f.name for f in fields(EvaluationSection)]
    reject_unknown(raw, known, "key in [evaluation]")
    kw = dict(raw)
    for key in ("healthy_quantile", "bootstrap_level", "overlap", "min_brain_fraction"):
        if key in kw:
            kw[key] = float(typed(f"evaluation.{key}", kw[key], (int, float)))
    if "blend" in kw:
        typed("evaluation.blend", kw["blend"], str)
    return EvaluationSection(**kw)


# -- registry checks ---------------------------------------------------------------------------------
def validate(cfg: BenchConfig, registries: Any) -> None:
    """Check every plugin name and parameter against ``registries``; build each variant once.

    Unknown names raise :class:`~brats_ad.errors.UnknownComponent` (did-you-mean + known names);
    a model's explicit ``dims`` it does not support, an unknown parameter or a value its
    constructor rejects raise :class:`ConfigError` naming the model / scorer.
    """
    where = f"bench config {cfg.source}: " if cfg.source else "bench config: "
    registries.datasets.get(cfg.dataset.name)
    if cfg.healthy is not None:
        registries.datasets.get(cfg.healthy.dataset)
    _check_pipeline(cfg.dataset.pipeline, registries, where + "dataset.pipeline")
    if cfg.healthy is not None:
        _check_pipeline(cfg.healthy.pipeline, registries, where + "training.healthy.pipeline")
    ds_entry = registries.datasets.get(cfg.dataset.name)
    try:
        ds_entry.resolve_params(cfg.dataset.params)
    except ConfigError as exc:
        raise ConfigError(where + f"dataset.params: {exc}") from None
    modalities = resolved_modalities(cfg, registries)
    for spec in cfg.models:
        entry = registries.models.get(spec.name)
        if spec.dims is not None:
            unsupported = [d for d in spec.dims if d not in entry.dims]
            if unsupported:
                raise ConfigError(
                    where + f"model {spec.name!r} supports dims {sorted(entry.dims)}, the config asks for "
                    f"{unsupported[0]}; remove it from the model's dims"
                )
        for dim in model_dims(cfg, spec, entry):
            try:
                params = model_params(cfg, spec, entry, dim, modalities)
                _build_cheaply(entry, params)
            except BratsAdError as exc:
                raise ConfigError(where + f"model {spec.name!r} ({dim}D): {exc}") from None
            except (TypeError, ValueError) as exc:
                raise ConfigError(where + f"model {spec.name!r} ({dim}D): invalid parameters ({exc}); fix [[models]] params") from None
    for spec in cfg.scorers:
        entry = registries.scorers.get(spec.name)
        for key in spec.grid:
            if key not in entry.params:

                allowed = ", ".join(sorted(entry.params)) or "(none)"
                raise ConfigError(
                    where + f"scorer {spec.name!r} has no parameter {key!r} to put in a grid"
                    f"{did_you_mean(key, entry.params)}; allowed: {allowed}"
                )
        for variant in spec.variants():
            try:
                entry.create(**variant)
            except BratsAdError as exc:
                raise ConfigError(where + f"scorer {spec.name!r} {_short(variant)}: {exc}") from None
            except (TypeError, ValueError) as exc:
                raise ConfigError(where + f"scorer {spec.name!r} {_short(variant)}: invalid parameters ({exc})") from None


def _build_cheaply(entry: Any, params: Mapping[str, Any]) -> Any:
    """Build a model to check its parameters, on torch's ``meta`` device (no memory, no init
    cost: a 3D GAN at full size builds in milliseconds); a model that cannot be built there
    (e.g. it reads tensor values in ``__init__``) is built on the CPU instead."""
    factory = entry.load()
    try:
        import torch

        with torch.device("meta"):
            return factory(**params)
    except BratsAdError:
        raise
    except Exception:  # noqa: BLE001 - not meta-friendly: the real build below reports real errors
        return factory(**params)


def _check_pipeline(spec: Any, registries: Any, where: str) -> None:
    if spec is None:
        return
    from brats_ad.preprocess.pipeline import build_pipeline

    try:
        build_pipeline(list(spec) if isinstance(spec, tuple) else spec, registries)
    except BratsAdError as exc:
        raise type(exc)(f"{where}: {exc}") from None


def _short(params: Mapping[str, Any]) -> str:
    return json.dumps(jsonable(params), sort_keys=True)


def resolved_modalities(cfg: BenchConfig, registries: Any) -> tuple[str, ...]:
    """``dataset.modalities``, else the dataset plugin's default ``modalities`` parameter."""
    if cfg.dataset.modalities is not None:
        return cfg.dataset.modalities
    default = registries.datasets.get(cfg.dataset.name).params.get("modalities")
    if not default:
        raise ConfigError(f"dataset {cfg.dataset.name!r} has no default modalities; set dataset.modalities = [...]")
    return tuple(default)


def model_dims(cfg: BenchConfig, spec: ModelSpec, entry: Any) -> tuple[int, ...]:
    """The matrix dims this model takes part in (its own ``dims`` or the matrix's, if supported)."""
    wanted = spec.dims if spec.dims is not None else cfg.dims
    return tuple(d for d in wanted if d in entry.dims)


def data_section(cfg: BenchConfig, dim: int, cache_dir: Path | None = None, unlabelled: str = "error") -> Any:
    """A ``brats-ad train`` [data] section for ``dim``: lets the bench reuse the train helpers."""
    from brats_ad.train.config import DataSection

    s = cfg.samplers[dim]
    return DataSection(
        dataset=cfg.dataset.name, cache_dir=cache_dir or cfg.cache_root, modalities=cfg.dataset.modalities,
        dims=dim, slice_size=cfg.samplers[2].size, patch_size=cfg.samplers[3].size,
        patch_stride=s.stride if dim == 3 else None, min_brain_fraction=s.min_brain_fraction,
        margin=s.margin, unlabelled=unlabelled, split_seed=cfg.split.seed, val=cfg.split.val,
        test=cfg.split.test,
    )


def model_params(cfg: BenchConfig, spec: ModelSpec, entry: Any, dim: int, modalities: tuple[str, ...]) -> dict[str, Any]:
    """The model's full parameters for ``dim``: user params plus what the data decides."""
    from brats_ad.train.config import ModelSection, TrainConfig
    from brats_ad.train.run import resolve_model_params

    train_cfg = TrainConfig(data=data_section(cfg, dim), model=ModelSection(spec.name, dict(spec.params)),
                            train=TrainSettings(), output_dir=cfg.out)
    return resolve_model_params(train_cfg, entry, tuple(modalities))


# -- hashing ---------------------------------------------------------------------------------------
def stable_hash(payload: Any, length: int = 16) -> str:
    """sha256 of canonical JSON (sorted keys; 1 and 1.0 alike), ``length`` hex characters."""
    text = json.dumps(_canonical(jsonable(payload)), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
