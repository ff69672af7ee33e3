"""Score one trained unit with all its pending scorer cells: the model runs once per batch.

Every validation and test volume goes through :func:`brats_ad.infer.volume.score_volume` once
with every scorer of the unit; each scorer's map feeds its own :class:`CellEvaluator`. A scorer
that raises (or returns NaN inside the brain) is isolated by :class:`GuardedScorer`: its cell
fails with the message, the unit's other cells go on. ``KeyboardInterrupt`` is never caught.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from brats_ad.bench.evaluate import CellEvaluator
from brats_ad.bench.matrix import Cell, Unit
from brats_ad.errors import DataError
from brats_ad.progress import progress_bar

if TYPE_CHECKING:  # pragma: no cover
    from brats_ad.bench.runner import BenchRunner


class GuardedScorer:
    """A scorer whose failures are recorded instead of raised (zeros are returned after one)."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer
        self.map_kind = getattr(scorer, "map_kind", "voxel")
        self.error: str | None = None

    def __call__(self, output: Any) -> Any:
        import torch

        from brats_ad.scorers.base import Score

        if self.error is None:
            try:
                score = self.scorer(output)
                amap = score.anomaly_map
                inside = amap if output.brain_mask is None else amap[output.brain_mask.expand_as(amap).bool()]
                if not bool(torch.isfinite(inside).all()) or not bool(torch.isfinite(score.sample_score).all()):
                    raise DataError("the scorer gave NaN or inf inside the brain; check the model (diverged?) and the scorer")
                return score
            except Exception as exc:  # noqa: BLE001 - recorded in the cell's row; KeyboardInterrupt passes
                from brats_ad.bench.runner import one_line

                self.error = one_line(exc)
        b = output.x.shape[0]
        shape = (b, 1, *output.x.shape[2:])
        return Score(anomaly_map=torch.zeros(shape, device=output.x.device),
                     sample_score=torch.zeros(b, device=output.x.device))


def score_unit(runner: "BenchRunner", unit: Unit, cells: list[Cell], train: dict[str, Any]) -> list[dict[str, Any]]:
    """Fit, score and evaluate ``cells`` of ``unit``; write and return their rows."""
    import torch

    from brats_ad.train.checkpoint import load_model
    from brats_ad.train.device import select_device

    cfg, data, ev = runner.cfg, runner.data, runner.cfg.evaluation
    settings = cfg.train_settings(unit.spec, unit.seed)
    device = select_device(settings.device)
    model = load_model(runner.unit_dir(unit) / train["checkpoint"], device=device, registries=runner.registries)
    rows: dict[str, dict[str, Any]] = {c.cell_id: runner.base_row(c, unit, train) for c in cells}
    errors: dict[str, str] = {}
    scorers: dict[str, GuardedScorer] = {}
    fit_time: dict[str, float] = {}
    healthy_outputs: list[Any] | None = None
    for cell in cells:
        entry = runner.registries.scorers.get(cell.scorer)
        try:
            scorer = entry.create(**cell.scorer_params)
            if callable(getattr(scorer, "fit", None)):
                started = time.perf_counter()
                if healthy_outputs is None:
                    healthy_outputs = _healthy_outputs(runner, unit, model, device)
                scorer.fit(healthy_outputs)
                fit_time[cell.cell_id] = time.perf_counter() - started
        except Exception as exc:  # noqa: BLE001 - the cell fails, the unit goes on
            from brats_ad.bench.runner import one_line

            errors[cell.cell_id] = one_line(exc)
            continue
        scorers[cell.cell_id] = GuardedScorer(scorer)
    healthy_outputs = None

    evaluators = {cid: CellEvaluator(dims=unit.dims, healthy_quantile=ev.healthy_quantile, bootstrap=ev.bootstrap,
                                     bootstrap_level=ev.bootstrap_level, bootstrap_seed=ev.bootstrap_seed,
                                     curve_points=ev.curve_points, min_component_size=ev.min_component_size)
                  for cid in scorers}
    eval_time = {cid: 0.0 for cid in scorers}
    score_time = 0.0
    volumes = _volumes(runner)
    gallery = _gallery_plan(runner)
    galleries: dict[str, dict[str, Any]] = {}
    size = cfg.samplers[unit.dims].size
    bar = progress_bar(enabled=runner.progress, console=runner.console, transient=True)
    if scorers:
        with bar:
            task = bar.add_task(f"scoring {unit.label}", total=len(volumes))
            started_test = False
            for part, cache_dir, case_id, healthy_reference in volumes:
                if part == "test" and not started_test:
                    for cid, evaluator in evaluators.items():
                        t0 = time.perf_counter()
                        evaluator.start_test()
                        eval_time[cid] += time.perf_counter() - t0
                    started_test = True
                image, mask, seg = _load_volume(cache_dir, case_id, data.modalities)
                t0 = time.perf_counter()
                result = _score(model, image, mask, scorers, unit, size, ev, device, case_id)
                score_time += time.perf_counter() - t0
                for cid, evaluator in evaluators.items():
                    amap = result.maps[cid]
                    t0 = time.perf_counter()
                    if part == "val":
                        evaluator.add_val(amap, seg, mask, case_id, healthy_reference=healthy_reference)
                    else:
                        scores, labels = _sample_level(result, cid, seg, mask, unit.dims, size)
                        evaluator.add_test(amap, seg, mask, case_id, sample_scores=scores, sample_labels=labels)
                        if gallery is not None and case_id == gallery["case_id"]:
                            galleries[cid] = _gallery(image, seg, mask, amap, gallery)
                    eval_time[cid] += time.perf_counter() - t0
                bar.advance(task)
            if not started_test:
                for evaluator in evaluators.values():
                    evaluator.start_test()
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    out: list[dict[str, Any]] = []
    for cell in cells:
        row = rows[cell.cell_id]
        cid = cell.cell_id
        error = errors.get(cid) or (scorers[cid].error if cid in scorers else None)
        if error is None:
            t0 = time.perf_counter()
            result = evaluators[cid].finish()
            eval_time[cid] += time.perf_counter() - t0
            row["metrics"] = result["metrics"]
            row["thresholds"] = result["thresholds"]
            row["n_skipped_dice"] = result["n_skipped_dice"]
            row["notes"] = result["notes"]
            row["n_samples"] = result["n_samples"]
            _write_artifacts(runner, cid, row, result["curves"], galleries.get(cid))
            row["timings"].update(score_s=score_time, eval_s=eval_time[cid], fit_s=fit_time.get(cid),
                                  score_shared_by=len(scorers))
        else:
            row.update(status="failed", error=error)
        runner.store.write(row)
        out.append(row)
    return out


def _volumes(runner: "BenchRunner") -> list[tuple[str, Any, str, bool]]:
    """``(part, cache dir, case id, healthy reference)``: validation volumes first, then test."""
    data = runner.data
    vols: list[tuple[str, Any, str, bool]] = []
    if runner.cfg.strategy == "healthy-controls":
        vols += [("val", data.cache_dir, cid, False) for cid in data.split.val]
        vols += [("val", data.healthy_cache_dir, cid, True) for cid in data.healthy_split.val]
    else:
        vols += [("val", data.cache_dir, cid, True) for cid in data.split.val]
    vols += [("test", data.cache_dir, cid, False) for cid in data.split.test]
    return vols


def _load_volume(cache_dir: Any, case_id: str, modalities: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(image (C, X, Y, Z) float32, brain mask (X, Y, Z) bool, seg (X, Y, Z) or None)``."""
    from brats_ad.data.cache import CachedCase

    case = CachedCase.open(cache_dir, case_id)
    channels = case.channels(modalities)
    image = np.asarray(case.image[:, channels], dtype=np.float32).transpose(1, 2, 3, 0)
    mask = np.asarray(case.brain_mask).transpose(1, 2, 0)
    seg = None if case.seg is None else np.asarray(case.seg).transpose(1, 2, 0)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask), None if seg is None else np.ascontiguousarray(seg)


def _score(model: Any, image: np.ndarray, mask: np.ndarray, scorers: dict[str, GuardedScorer], unit: Unit,
           size: int, ev: Any, device: Any, case_id: str) -> Any:
    from brats_ad.infer.volume import score_volume

    return score_volume(model, image, mask, scorers, spatial_dims=unit.dims, size=size, batch_size=ev.batch_size,
                        device=device, overlap=ev.overlap, blend=ev.blend,
                        min_brain_fraction=ev.min_brain_fraction, case_id=case_id)


def _sample_level(result: Any, cid: str, seg: np.ndarray | None, mask: np.ndarray, dims: int,
                  patch: int) -> tuple[list[float], list[int]]:
    """One score per scored sample, positive if it holds tumour: 2D an axial slice, 3D a
    sliding window (``patch`` voxels a side). Patches rather than volumes in 3D because every
    BraTS volume holds tumour, so a volume-level AUROC would be undefined on real data."""
    tumour = np.zeros(mask.shape, bool) if seg is None else (seg > 0) & mask
    scored = np.asarray(result.scored, bool)
    scores = np.asarray(result.sample_scores[cid], dtype=np.float64)[scored]
    if dims == 2:
        labels = tumour.any(axis=(0, 1))[scored]
    else:
        labels = np.array([tumour[tuple(slice(max(c, 0), max(c + patch, 0)) for c in corner)].any()
                           for corner in np.asarray(result.windows)[scored]], dtype=bool)
    return scores.tolist(), labels.astype(int).tolist()


def _healthy_outputs(runner: "BenchRunner", unit: Unit, model: Any, device: Any) -> list[Any]:
    """The model's outputs on healthy validation samples (capped), for scorers with ``fit``."""
    from brats_ad.infer.fitting import healthy_outputs
    from brats_ad.train.run import healthy_dataset

    section, cache_dir, split = runner.train_data(unit)
    if not split.val:
        raise DataError("scorer needs healthy validation samples to fit, but the split has no validation case; raise [split] val")
    outputs = healthy_outputs(model, healthy_dataset(section, cache_dir, split.val), device=device,
                              batch_size=runner.cfg.evaluation.batch_size,
                              max_samples=runner.cfg.evaluation.fit_max_samples)
    if not outputs:
        raise DataError("no healthy validation samples to fit the scorer on; lower [sampler] min_brain_fraction or raise [split] val")
    return outputs


# -- artifacts -------------------------------------------------------------------------------------
def _gallery_plan(runner: "BenchRunner") -> dict[str, Any] | None:
    """The test case with most tumour and its ``gallery_slices`` axial slices of largest tumour area."""
    from brats_ad.data.cache import read_meta

    n = runner.cfg.evaluation.gallery_slices
    data = runner.data
    if n == 0 or not data.split.test:
        return None
    best, best_count, best_counts = None, 0, None
    for cid in data.split.test:
        meta = read_meta(data.cache_dir, cid) or {}
        counts = meta.get("tumour_voxels_per_slice") or []
        if sum(counts) > best_count:
            best, best_count, best_counts = cid, sum(counts), np.asarray(counts)
    if best is None:
        return None
    order = np.argsort(-best_counts, kind="stable")
    chosen: list[int] = []
    spacing = max(1, int(np.count_nonzero(best_counts)) // (n + 1))
    for z in order:  # largest areas first, spaced so the slices differ
        if best_counts[z] == 0 or len(chosen) == n:
            break
        if all(abs(int(z) - c) >= spacing for c in chosen):
            chosen.append(int(z))
    return {"case_id": best, "z": sorted(chosen)}


def _gallery(image: np.ndarray, seg: np.ndarray | None, mask: np.ndarray, amap: np.ndarray, plan: dict[str, Any]) -> dict[str, Any]:
    z = np.asarray(plan["z"], dtype=np.int64)
    return {
        "case_id": np.asarray(plan["case_id"]),
        "z": z,
        "image": image[..., z].transpose(3, 0, 1, 2).astype(np.float16),  # (n, C, X, Y)
        "seg": (np.zeros(mask.shape, np.uint8) if seg is None else seg)[..., z].transpose(2, 0, 1).astype(np.uint8),
        "brain_mask": mask[..., z].transpose(2, 0, 1),
        "map": amap[..., z].transpose(2, 0, 1).astype(np.float32),  # (n, X, Y)
    }


def _write_artifacts(runner: "BenchRunner", cid: str, row: dict[str, Any], curves: dict[str, Any],
                     gallery: dict[str, Any] | None) -> None:
    from brats_ad.io import atomic_path, write_json_atomic

    folder = runner.store.artifact_dir(cid)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "curves.json", curves, indent=None)
    row["artifacts"]["curves"] = runner.store.relpath(folder / "curves.json")
    if gallery is not None:
        gallery = {**gallery, "modalities": np.asarray(list(runner.data.modalities))}
        with atomic_path(folder / "gallery.npz") as tmp:
            np.savez_compressed(tmp, **gallery)
        row["artifacts"]["gallery"] = runner.store.relpath(folder / "gallery.npz")
