"""Pipelines: steps resolved by name through the plugin registry, with a stable config hash.

A spec is a pipeline name (:data:`PIPELINES`) or a list whose items are step names or
``{"name": step, **params}`` dicts. Steps come from ``get_registries().preprocessors``, so a
third-party step works exactly like a built-in one. :meth:`Pipeline.config_hash` names the
cache folder: it changes with any step or parameter, and with :data:`CACHE_FORMAT_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from brats_ad.data.scan import Scan
from brats_ad.errors import ConfigError, DataError, UnknownComponent
from brats_ad.preprocess.base import affine_list
from brats_ad.config import did_you_mean

if TYPE_CHECKING:  # pragma: no cover - typing only
    from brats_ad.registry import Registries

#: Bump when preprocessing output or the cache layout changes for the same config: every
#: pipeline hash changes, so stale caches are never reused.
CACHE_FORMAT_VERSION = 1

#: Named default pipelines. BraTS is already skull-stripped and co-registered (fast path);
#: healthy controls are registered, skull-stripped into BraTS space, then normalised alike.
PIPELINES: Mapping[str, tuple[Mapping[str, Any], ...]] = {
    "brats": (
        {"name": "orient"},
        {"name": "resample"},
        {"name": "median-scale"},
        {"name": "crop-pad", "shape": (192, 192, 160)},
    ),
    "healthy": (
        {"name": "orient"},
        {"name": "resample"},
        {"name": "coregister"},
        {"name": "skullstrip", "space": "template"},
        {"name": "median-scale"},
        {"name": "crop-pad", "shape": (192, 192, 160)},
    ),
}

Step = Callable[[Scan], Scan]


class Pipeline:
    """Steps applied in order; records the input grid in ``meta`` so maps can go back to it.

    ``meta`` keys written: ``original_shape`` and ``original_affine`` (the input grid, set once,
    kept if the loader already set them), ``processed_shape``, ``processed_affine``,
    ``pipeline`` (the config) and ``pipeline_hash``; each step appends to ``meta["steps"]``.
    """

    def __init__(self, config: Sequence[Mapping[str, Any]], steps: Sequence[Step]) -> None:
        if len(config) != len(steps):
            raise ValueError(f"got {len(config)} step configs but {len(steps)} steps; need one each")
        self._config = [dict(c) for c in config]
        self.steps: tuple[Step, ...] = tuple(steps)

    def __call__(self, scan: Scan) -> Scan:
        import dataclasses

        meta = dict(scan.meta)
        meta.setdefault("original_shape", [int(n) for n in scan.spatial_shape])
        meta.setdefault("original_affine", affine_list(scan.affine))
        scan = dataclasses.replace(scan, meta=meta)
        for step in self.steps:
            scan = step(scan)
        meta = dict(scan.meta)
        meta["processed_shape"] = [int(n) for n in scan.spatial_shape]
        meta["processed_affine"] = affine_list(scan.affine)
        meta["pipeline"] = self.to_config()
        meta["pipeline_hash"] = self.config_hash()
        return dataclasses.replace(scan, meta=meta)

    def to_config(self) -> list[dict[str, Any]]:
        """Each step as ``{"name": ..., **params}`` with every default filled in, JSON-safe."""
        return json.loads(json.dumps(self._config))

    def config_hash(self) -> str:
        """12 hex characters of the sha256 of the canonical JSON config + cache format version."""
        payload = json.dumps(
            {"cache_format_version": CACHE_FORMAT_VERSION, "steps": self._config},
            sort_keys=True, separators=(",", ":"), allow_nan=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        return f"Pipeline({' -> '.join(c['name'] for c in self._config)}; hash {self.config_hash()})"


def build_pipeline(
    spec: str | Sequence[str | Mapping[str, Any]], registries: "Registries | None" = None
) -> Pipeline:
    """Build a :class:`Pipeline` from a pipeline name or a list of step specs."""
    if registries is None:
        from brats_ad.plugins import get_registries

        registries = get_registries()
    registry = registries.preprocessors
    if isinstance(spec, str):
        if spec not in PIPELINES:
            raise UnknownComponent(
                f"no pipeline {spec!r}{did_you_mean(spec, PIPELINES)}. Known: "
                f"{', '.join(sorted(PIPELINES))}; or give a list of steps like "
                "[{name = 'orient'}, {name = 'zscore'}]"
            )
        spec = PIPELINES[spec]
    if isinstance(spec, Mapping) or not isinstance(spec, Sequence):
        raise ConfigError(
            f"a preprocessing spec must be a pipeline name or a list of steps, got "
            f"{type(spec).__name__}; e.g. 'brats' or [{{'name': 'orient'}}]"
        )
    config, steps = [], []
    for i, item in enumerate(spec):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ConfigError(
                f"preprocessing step {i}: expected a step name or a dict with a 'name' key, got "
                f"{item!r}; e.g. {{'name': 'zscore'}}"
            )
        params = {k: v for k, v in item.items() if k != "name"}
        entry = registry.get(item["name"])
        resolved = {k: _like_default(v, entry.params.get(k)) for k, v in entry.resolve_params(params).items()}
        config.append({"name": entry.name, **_json_safe(resolved, f"step {entry.name!r}")})
        steps.append(entry.load()(**resolved))
    return Pipeline(config, steps)


def _like_default(value: Any, default: Any) -> Any:
    """Give ints the float type of a float default (so 1 and 1.0 hash alike), element-wise."""
    if isinstance(default, float) and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, (tuple, list)) and isinstance(value, (tuple, list, np.ndarray)) and len(value) == len(default):
        return tuple(_like_default(v, d) for v, d in zip(value, default))
    return value


def _json_safe(value: Any, where: str) -> Any:
    """Tuples -> lists, numpy scalars -> Python, Paths -> str; anything else is an error."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v, where) for k, v in value.items()}
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_json_safe(v, where) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, float) and not np.isfinite(value):
            raise ConfigError(f"{where}: parameters must be finite numbers, got {value!r}")
        return value
    raise ConfigError(
        f"{where}: parameter value {value!r} ({type(value).__name__}) is not JSON-safe; "
        "use numbers, strings, booleans, lists or dicts"
    )


def map_to_input_grid(
    array: np.ndarray,
    meta: Mapping[str, Any],
    *,
    affine: np.ndarray | None = None,
    order: int = 1,
    fill: float = 0.0,
) -> np.ndarray:
    """Resample a processed-space map ``(X, Y, Z)`` back onto the scan's input grid.

    Uses ``meta["original_shape"]``/``meta["original_affine"]`` and the processed affine
    (``affine`` or ``meta["processed_affine"]``). ``order`` 1 is linear (scores), 0 nearest
    (masks, labels); input voxels outside the processed box get ``fill``. Flips, permutations
    and whole-voxel shifts (orient, crop-pad) are done by slicing, so they are exact and fast.
    """
    from scipy import ndimage

    try:
        out_shape = tuple(int(n) for n in meta["original_shape"])
        original = np.asarray(meta["original_affine"], dtype=float)
        processed = np.asarray(affine if affine is not None else meta["processed_affine"], dtype=float)
    except KeyError as exc:
        raise DataError(
            f"map_to_input_grid: meta lacks {exc.args[0]!r}; pass the meta of a scan that went "
            "through a Pipeline (or the cache's meta.json)"
        ) from None
    array = np.asarray(array)
    if array.ndim != 3:
        raise DataError(f"map_to_input_grid: expected a (X, Y, Z) map, got shape {array.shape}")
    if order not in (0, 1):
        raise ConfigError(f"map_to_input_grid: order must be 0 (nearest) or 1 (linear), got {order!r}")
    # input voxel index -> processed voxel index
    vox = np.linalg.solve(processed, original)
    matrix, offset = vox[:3, :3], vox[:3, 3]
    rounded = np.round(matrix)
    if np.allclose(matrix, rounded, atol=1e-6) and np.allclose(offset, np.round(offset), atol=1e-4) and _is_signed_permutation(rounded):
        return _permute_shift(array, rounded.astype(int), np.round(offset).astype(int), out_shape, fill)
    out = ndimage.affine_transform(
        array.astype(np.float32) if order == 1 else array, matrix, offset,
        output_shape=out_shape, order=order, mode="constant", cval=fill, prefilter=False,
    )
    return out


def _is_signed_permutation(matrix: np.ndarray) -> bool:
    return bool(np.all(np.abs(matrix).sum(axis=0) == 1) and np.all(np.abs(matrix).sum(axis=1) == 1))


def _permute_shift(array: np.ndarray, matrix: np.ndarray, offset: np.ndarray, out_shape: tuple, fill: float) -> np.ndarray:
    """Exact ``out[i] = array[matrix @ i + offset]`` for a signed permutation ``matrix``."""
    out = np.full(out_shape, fill, dtype=np.result_type(array.dtype, np.asarray(fill).dtype))
    # processed axis p = matrix row p; it reads input axis a with sign s: p_idx = s * i_a + offset_p
    src, dst = [slice(None)] * 3, [slice(None)] * 3
    axes = [0, 0, 0]
    signs = [1, 1, 1]
    for p in range(3):
        a = int(np.flatnonzero(matrix[p])[0])
        axes[a], signs[a] = p, int(matrix[p, a])
        # valid input indices i_a with 0 <= s*i_a + off < array.shape[p]
        s, off, n_in, n_out = signs[a], int(offset[p]), array.shape[p], out_shape[a]
        idx = np.arange(n_out)
        proc = s * idx + off
        ok = np.flatnonzero((proc >= 0) & (proc < n_in))
        if ok.size == 0:
            return out
        lo, hi = ok[0], ok[-1] + 1
        dst[a] = slice(lo, hi)
        p_lo, p_hi = s * lo + off, s * (hi - 1) + off
        src[p] = slice(p_lo, p_hi + 1) if s > 0 else slice(p_lo, (p_hi - 1) if p_hi > 0 else None, -1)
    # reorder processed axes into input-axis order, then place
    moved = array[tuple(src)].transpose(axes)
    out[tuple(dst)] = moved
    return out
