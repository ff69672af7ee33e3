"""Expand a benchmark config into training units and scorer cells, and say what was dropped.

A *unit* is one (model, dims, seed): trained once, its checkpoint reused by every scorer. A
*cell* is a unit plus one scorer variant (a grid combination): one results row. A pair is
dropped, with a printed reason, when the scorer requires something the model does not provide
(``requires`` vs ``provides``), or when the model or the scorer does not support the dims.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from brats_ad.bench.config import BenchConfig, ModelSpec, model_params, resolved_modalities, stable_hash


@dataclass(frozen=True)
class Cell:
    """One (model, scorer variant, dims, seed): one results row."""

    cell_id: str
    unit_id: str
    model: str
    model_params: Mapping[str, Any]
    scorer: str
    scorer_params: Mapping[str, Any]
    dims: int
    seed: int

    @property
    def label(self) -> str:
        return f"{self.model} {self.dims}D seed {self.seed} x {self.scorer}{_param_label(self.scorer_params, self.scorer)}"


@dataclass(frozen=True)
class Unit:
    """One model to train (once) and the cells that score it."""

    unit_id: str
    model: str
    spec: ModelSpec
    model_params: Mapping[str, Any]
    dims: int
    seed: int
    cells: tuple[Cell, ...] = field(default=())

    @property
    def label(self) -> str:
        return f"{self.model} {self.dims}D seed {self.seed}"

    @property
    def dirname(self) -> str:
        return f"{self.model}-{self.dims}d-s{self.seed}-{self.unit_id[:8]}"


@dataclass(frozen=True)
class Dropped:
    """A combination left out of the matrix and why."""

    model: str
    scorer: str | None
    dims: int
    reason: str

    def __str__(self) -> str:
        what = self.model if self.scorer is None else f"{self.model} x {self.scorer}"
        return f"{what} ({self.dims}D): {self.reason}"


@dataclass(frozen=True)
class Matrix:
    units: tuple[Unit, ...]
    dropped: tuple[Dropped, ...]

    @property
    def cells(self) -> list[Cell]:
        return [c for u in self.units for c in u.cells]


def _param_label(params: Mapping[str, Any], scorer: str) -> str:
    """The parameters worth showing in a label (the grid ones and any non-default)."""
    shown = {k: v for k, v in params.items() if k in ("alpha", "beta", "power", "top_percent") and v is not None}
    return "" if not shown else " (" + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()) + ")"


def expand(cfg: BenchConfig, registries: Any) -> Matrix:
    """Every compatible (model, scorer variant, dims, seed), grouped into training units."""
    modalities = resolved_modalities(cfg, registries)
    protocol = cfg.protocol_dict()
    units: list[Unit] = []
    dropped: list[Dropped] = []
    scorer_entries = [(spec, registries.scorers.get(spec.name)) for spec in cfg.scorers]
    seen_units: set[str] = set()
    for spec in cfg.models:
        entry = registries.models.get(spec.name)
        wanted = spec.dims if spec.dims is not None else cfg.dims
        for dim in cfg.dims:
            if dim not in wanted:
                continue
            if dim not in entry.dims:
                dropped.append(Dropped(spec.name, None, dim, f"model supports dims {sorted(entry.dims)} only"))
                continue
            params = model_params(cfg, spec, entry, dim, modalities)
            for seed in cfg.seeds:
                settings = cfg.train_settings(spec, seed)
                unit_key = {"model": spec.name, "params": params, "dims": dim, "seed": seed,
                            "training": settings, "sampler": cfg.samplers[dim], "protocol": protocol}
                unit_id = stable_hash(unit_key)
                if unit_id in seen_units:
                    continue
                seen_units.add(unit_id)
                cells = []
                seen_cells: set[str] = set()
                for s_spec, s_entry in scorer_entries:
                    reason = incompatibility(entry, s_entry, dim)
                    if reason is not None:
                        if seed == cfg.seeds[0]:
                            dropped.append(Dropped(spec.name, s_spec.name, dim, reason))
                        continue
                    for variant in s_spec.variants():
                        scorer_params = s_entry.resolve_params(variant)
                        cell_id = stable_hash({"unit": unit_id, "scorer": s_spec.name, "params": scorer_params})
                        if cell_id in seen_cells:
                            continue
                        seen_cells.add(cell_id)
                        cells.append(Cell(cell_id, unit_id, spec.name, params, s_spec.name, scorer_params, dim, seed))
                if not cells:
                    if seed == cfg.seeds[0]:
                        dropped.append(Dropped(spec.name, None, dim, "no scorer in the config can score this model"))
                    continue
                units.append(Unit(unit_id, spec.name, spec, params, dim, seed, tuple(cells)))
    return Matrix(tuple(units), tuple(dropped))


def incompatibility(model_entry: Any, scorer_entry: Any, dims: int) -> str | None:
    """Why ``scorer_entry`` cannot score ``model_entry`` at ``dims``, or None."""
    missing = sorted(set(scorer_entry.requires) - set(model_entry.provides))
    if missing:
        provided = ", ".join(sorted(model_entry.provides)) or "nothing"
        return f"scorer requires {', '.join(missing)}; model provides {provided}"
    if dims not in scorer_entry.dims:
        return f"scorer supports dims {sorted(scorer_entry.dims)} only"
    return None
