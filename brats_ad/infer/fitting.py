"""Which scorers run on a checkpoint, and fitting those that learn from HEALTHY data.

Defaults: every registered scorer whose ``requires`` the model's registry entry ``provides``
(and whose dims include the model's); the rest are reported as skipped, with the reason.
Scorers with ``fit`` (e.g. ``combined``) are fitted once on the checkpoint's own healthy
validation split, rebuilt from ``train_config.json`` exactly as training built it (same
sampler, cache folder and split manifest, with brain masks as :func:`score_volume` gives them),
and their ``state_dict()`` saved as ``<checkpoint dir>/scorers/<name>.json`` (atomic). The file
is reused while the checkpoint file (sha256), the split hash and the scorer parameters are
unchanged; otherwise the scorer is refitted and the file replaced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from brats_ad import __version__
from brats_ad.errors import BratsAdError, ConfigError, DataError
from brats_ad.io import jsonable

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from brats_ad.registry import Entry, Registries

SCORER_STATE_DIR = "scorers"
SCORER_STATE_FORMAT = 1


def select_scorers(
    names: Sequence[str] | None, model_name: str, dims: int, registries: "Registries"
) -> tuple[dict[str, "Entry"], dict[str, str]]:
    """``(chosen entries, {skipped name: why})``; an incompatible scorer asked for by name is an error."""
    model_entry = registries.models.get(model_name)
    provides = set(model_entry.provides)

    def why_not(entry: "Entry") -> str | None:
        missing = sorted(set(entry.requires) - provides)
        if missing:
            return (f"needs {', '.join(missing)}, model {model_name!r} provides "
                    f"{', '.join(sorted(provides)) or 'nothing'}")
        if dims not in entry.dims:
            return f"supports dims {sorted(entry.dims)}, the model is {dims}D"
        return None

    chosen: dict[str, Entry] = {}
    skipped: dict[str, str] = {}
    if names is None:
        for entry in registries.scorers:
            reason = why_not(entry)
            if reason:
                skipped[entry.name] = reason
            else:
                chosen[entry.name] = entry
        return chosen, skipped
    for name in dict.fromkeys(names):
        entry = registries.scorers.get(name)  # unknown names: UnknownComponent with did-you-mean
        reason = why_not(entry)
        if reason:
            raise ConfigError(f"scorer {name!r} cannot score model {model_name!r}: it {reason}; pick another scorer")
        chosen[name] = entry
    return chosen, skipped


def build_scorers(selected, skipped, model, run_cfg, checkpoint, dev, batch, *, explicit, say):
    """Instantiate scorers; fit (or reload the fitted statistics of) those with ``fit``."""
    objects: dict[str, Any] = {}
    fitted_from: dict[str, str] = {}
    healthy: list[Any] | None = None
    for name, entry in selected.items():
        scorer = entry.create()
        if callable(getattr(scorer, "fit", None)):
            path = scorer_state_path(checkpoint, name)
            key = _fit_key(checkpoint, run_cfg, dict(entry.params))
            try:
                if not _load_state(scorer, path, key):
                    if healthy is None:
                        say(f"fitting {name!r} on the healthy validation split (once; saved to {path})")
                        healthy = healthy_validation_outputs(model, run_cfg, checkpoint, device=dev, batch_size=batch)
                    from brats_ad.scorers.base import fit_if_needed

                    fit_if_needed(scorer, healthy)
                    _save_state(scorer, path, key, name)
            except BratsAdError as exc:
                if explicit:
                    raise
                skipped[name] = f"needs fitting on healthy validation data, which failed: {exc}"
                continue
            fitted_from[name] = str(path) if path.is_file() else "healthy validation split (no state_dict: not saved)"
        objects[name] = scorer
    return objects, fitted_from


def scorer_state_path(checkpoint: Path, name: str) -> Path:
    """``<checkpoint dir>/scorers/<name>.json``."""
    return Path(checkpoint).parent / SCORER_STATE_DIR / f"{name}.json"


def _fit_key(checkpoint: Path, run_cfg: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """What fitted statistics depend on: the exact checkpoint file, the split, the scorer params."""
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)

    return {"checkpoint_sha256": digest.hexdigest(), "split_hash": run_cfg.get("split_hash"),
            "params": jsonable(dict(params))}


def _load_state(scorer: Any, path: Path, key: Mapping[str, Any]) -> bool:
    """Load saved statistics when they were fitted for this checkpoint + split + params."""
    if not path.is_file() or not callable(getattr(scorer, "load_state_dict", None)):
        return False
    try:
        saved = json.loads(path.read_text())
    except ValueError:
        return False  # a damaged file is refitted and replaced
    if saved.get("format") != SCORER_STATE_FORMAT or saved.get("key") != key:
        return False
    try:
        scorer.load_state_dict(saved["state"])
    except (BratsAdError, KeyError, TypeError, ValueError):
        return False  # statistics this scorer cannot take back: refit and replace them
    return True


def _save_state(scorer: Any, path: Path, key: Mapping[str, Any], name: str) -> None:
    if not callable(getattr(scorer, "state_dict", None)):
        return  # nothing to save: refitted each run
    from brats_ad.io import write_json_atomic

    write_json_atomic(path, {"format": SCORER_STATE_FORMAT, "scorer": name, "key": key,
                             "state": jsonable(scorer.state_dict()), "brats_ad_version": __version__})


def healthy_validation_outputs(
    model: "torch.nn.Module", run_cfg: Mapping[str, Any], checkpoint: Path, *, device: Any, batch_size: int | None
) -> list[Any]:
    """The model's outputs (on CPU) for the run's healthy validation samples, one per batch.

    The samples are rebuilt exactly as training built them (same sampler, same settings) from
    the cache folder and the split manifest of ``train_config.json``.
    """
    from brats_ad.data.splits import load_split
    from brats_ad.train.config import parse_data_section
    from brats_ad.train.run import healthy_dataset

    data = parse_data_section({k: v for k, v in (run_cfg.get("data") or {}).items() if v is not None})
    cache_dir = Path(run_cfg.get("cache_dir") or data.cache_dir)
    if not cache_dir.is_dir():
        raise DataError(
            f"the training cache {cache_dir} is not here, so the healthy validation split cannot be "
            "rebuilt; run on the machine that trained, or copy the fitted scorers/<name>.json"
        )
    candidates = [data.split_file, Path(checkpoint).parent / "split.json", Path(run_cfg.get("output_dir", ".")) / "split.json"]
    split_file = next((p for p in candidates if p is not None and Path(p).is_file()), None)
    if split_file is None:
        raise DataError(f"no split manifest (split.json) beside {checkpoint} or in the run's output folder; restore it from the training run")
    split = load_split(split_file)
    if run_cfg.get("split_hash") and split.hash != run_cfg["split_hash"]:
        raise DataError(
            f"split manifest {split_file} has hash {split.hash}, the run trained with {run_cfg['split_hash']}; "
            "restore the run's split.json"
        )
    outputs = healthy_outputs(model, healthy_dataset(data, cache_dir, split.val), device=device, batch_size=batch_size)
    if not outputs:
        raise DataError(f"no healthy validation samples in {cache_dir} for split {split_file}; check the run")
    return outputs


def healthy_outputs(
    model: "torch.nn.Module", dataset: Any, *, device: Any, batch_size: int | None, max_samples: int | None = None
) -> list[Any]:
    """The model's outputs (on CPU) for a healthy sampler's items, one per batch, with each
    sample's brain mask attached as :func:`~brats_ad.infer.volume.score_volume` attaches it, so
    fitted statistics cover the same voxels the scorer later sees. ``max_samples`` keeps an
    evenly spread, deterministic subset. ``predict`` and ``bench`` both fit scorers through here.
    """
    import torch
    from torch.utils.data import DataLoader, Subset

    items: Any = _WithBrainMask(dataset)
    if max_samples is not None and len(items) > max_samples:
        idx = np.linspace(0, len(items) - 1, max_samples).round().astype(int)
        items = Subset(items, np.unique(idx).tolist())
    outputs = []
    model.eval()
    with torch.inference_mode():
        for x, mask in DataLoader(items, batch_size=batch_size or 32, shuffle=False):
            out = model.infer(x.to(device))
            if out.brain_mask is None:
                out.brain_mask = mask
            outputs.append(dataclasses.replace(out, **{
                f.name: getattr(out, f.name).cpu() for f in dataclasses.fields(out)
                if hasattr(getattr(out, f.name), "cpu")
            }))
    return outputs


class _WithBrainMask:
    """A healthy sampler's items with their brain masks: ``(image, (1, *spatial) bool)``.

    Training samplers yield images only; the mask comes from the sampler's own index and, for
    slices, its own pad + resize, so it lines up with the image exactly.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        import torch

        from brats_ad.data.samplers import SliceDataset
        from brats_ad.infer.volume import to_slice_grid

        ds = self.dataset
        row = [int(v) for v in ds.index[i]]
        case = ds.cases[row[0]]
        if isinstance(ds, SliceDataset):
            mask = torch.from_numpy(np.array(case.brain_mask[row[1]]))[None]  # (1, X, Y)
            mask = to_slice_grid(mask, ds.size, "nearest").float() > 0.5
        else:
            mask = torch.from_numpy(np.ascontiguousarray(case.mask_patch(row[1:4], ds.size)))[None]
        return ds[i], mask
