"""One cell's evaluation, streamed volume by volume: validation first, then test.

The protocol, enforced by the order of calls:

1. :meth:`CellEvaluator.add_val` for every validation volume. Tumour cases feed the best-Dice
   threshold (``valbest``); healthy reference voxels (brain voxels outside tumour of the
   validation cases, or the healthy-control validation scans) feed the ``healthyq`` quantile.
2. :meth:`CellEvaluator.start_test` fixes both thresholds. Test labels have not been seen.
3. :meth:`CellEvaluator.add_test` for every test volume: voxel curves (brain voxels only), Dice
   at the two fixed thresholds per volume, sample-level scores (axial slices for 2D, sliding-window patches for 3D).
4. :meth:`CellEvaluator.finish`: metrics, thresholds, downsampled ROC / PR points. The oracle
   ⌈Dice⌉ (best threshold on test, i.e. using test labels) is its own metric.

Undefined metrics (e.g. a test split without a tumour-free slice) are NaN (``null`` in JSON)
rather than errors, so one odd split never stops a benchmark.

Dice is averaged over the test volumes that contain tumour (inside the brain mask), as in the
unsupervised-anomaly literature: a tumour-free volume has no overlap to measure, and counting
it as 0 whenever one voxel is flagged would make Dice depend on how many healthy volumes the
test split happens to hold. Tumour-free volumes still count in the voxel AUROC / AUPRC and at
the sample level; ``n_skipped_dice`` says how many were left out of Dice.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from brats_ad.data.splits import patient_id
from brats_ad.errors import UndefinedMetricError
from brats_ad.metrics.bootstrap import bootstrap_voxel_ci
from brats_ad.metrics.dice import DiceAccumulator, Threshold, best_dice_threshold, healthy_quantile_threshold, oracle_dice_score
from brats_ad.metrics.sample import sample_auprc_score, sample_auroc_score
from brats_ad.metrics.voxel import VoxelAccumulator

NAN = float("nan")


class CellEvaluator:
    """Metrics of one scorer on one trained model (see the module docstring for the order)."""

    def __init__(
        self,
        *,
        dims: int,
        healthy_quantile: float = 0.995,
        bootstrap: int = 1000,
        bootstrap_level: float = 0.95,
        bootstrap_seed: int = 0,
        curve_points: int = 200,
        val_bins_log2: int = 16,
        test_bins_log2: int = 18,
        min_component_size: int = 0,
    ) -> None:
        self.dims = dims
        self.min_component_size = min_component_size  # Dice only: see DiceAccumulator
        self.q = healthy_quantile
        self.bootstrap = bootstrap
        self.bootstrap_level = bootstrap_level
        self.bootstrap_seed = bootstrap_seed
        self.curve_points = curve_points
        self.val_tumour = VoxelAccumulator(bins_log2=val_bins_log2, case_bins_log2=8)
        self.val_healthy = VoxelAccumulator(bins_log2=val_bins_log2, case_bins_log2=8)
        self.test = VoxelAccumulator(bins_log2=test_bins_log2)
        self.thresholds: dict[str, Threshold | None] | None = None
        self.dice: dict[str, DiceAccumulator] = {}
        self.n_tumour_free = 0  # test volumes left out of Dice (see the module docstring)
        self.sample_truth: list[np.ndarray] = []
        self.sample_score: list[np.ndarray] = []
        self.n_val = 0
        self.n_test = 0
        self.notes: list[str] = []

    # -- 1. validation ------------------------------------------------------------------------------
    def add_val(self, amap: np.ndarray, seg: np.ndarray | None, mask: np.ndarray, case_id: str,
                *, healthy_reference: bool = True) -> None:
        """One validation volume (maps ``(X, Y, Z)`` in processed space, ``seg`` labels or None)."""
        if self.thresholds is not None:
            raise RuntimeError("validation volumes must come before start_test(); this is a bug in the runner")
        tumour = None if seg is None else np.asarray(seg) > 0
        if tumour is not None and tumour[mask].any():
            self.val_tumour.update(amap, tumour, mask=mask, case_id=case_id)
        if healthy_reference:
            healthy = mask if tumour is None else (mask & ~tumour)
            self.val_healthy.update(amap, None, mask=healthy, case_id=case_id)
        self.n_val += 1

    # -- 2. thresholds --------------------------------------------------------------------------------
    def start_test(self) -> dict[str, Threshold | None]:
        """Fix the label-free thresholds from validation data only."""
        thresholds: dict[str, Threshold | None] = {}
        try:
            thresholds["valbest"] = best_dice_threshold(self.val_tumour)
        except UndefinedMetricError as exc:
            thresholds["valbest"] = None
            self.notes.append(f"valbest: {exc}")
        try:
            thresholds["healthyq"] = healthy_quantile_threshold(self.val_healthy, q=self.q)
        except UndefinedMetricError as exc:
            thresholds["healthyq"] = None
            self.notes.append(f"healthyq: {exc}")
        self.thresholds = thresholds
        self.dice = {k: DiceAccumulator(t, on_undefined="skip", min_component_size=self.min_component_size)
                     for k, t in thresholds.items() if t is not None}
        return thresholds

    # -- 3. test --------------------------------------------------------------------------------------
    def add_test(self, amap: np.ndarray, seg: np.ndarray | None, mask: np.ndarray, case_id: str,
                 *, sample_scores: Sequence[float], sample_labels: Sequence[int]) -> None:
        """One test volume plus its sample-level scores / labels (slices in 2D, one in 3D)."""
        if self.thresholds is None:
            raise RuntimeError("call start_test() after the validation volumes; this is a bug in the runner")
        tumour = np.zeros(np.shape(amap), bool) if seg is None else np.asarray(seg) > 0
        self.test.update(amap, tumour, mask=mask, case_id=patient_id(case_id))
        if np.any(tumour & np.asarray(mask, bool)):
            for acc in self.dice.values():
                acc.update(amap, tumour, mask=mask, case_id=case_id)
        else:
            self.n_tumour_free += 1
        scores = np.asarray(sample_scores, dtype=np.float64).reshape(-1)
        labels = np.asarray(sample_labels, dtype=np.int64).reshape(-1)
        keep = np.isfinite(scores)
        self.sample_score.append(scores[keep])
        self.sample_truth.append(labels[keep])
        self.n_test += 1

    # -- 4. metrics -----------------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """``{"metrics", "thresholds", "n_skipped_dice", "curves", "notes"}`` (NaN where undefined)."""
        if self.thresholds is None:
            self.start_test()
        metrics: dict[str, Any] = {}
        curve = self.test.compute(on_undefined="nan")
        metrics["voxel_auroc_score"] = curve.auroc_score
        metrics["voxel_auprc_score"] = curve.auprc_score
        for key in ("valbest", "healthyq"):
            acc = self.dice.get(key)
            mean = std = NAN
            if acc is not None:
                try:  # every volume it saw holds tumour, so only "no volume at all" is undefined
                    result = acc.compute()
                    mean, std = result.dice_mean_score, result.dice_std
                except UndefinedMetricError as exc:
                    self.notes.append(f"dice_{key}: {exc}")
            metrics[f"dice_{key}_score"] = mean
            metrics[f"dice_{key}_std"] = std
        metrics["oracle_dice_score"] = oracle_dice_score(self.test, on_undefined="nan").oracle_dice_score
        truth = np.concatenate(self.sample_truth) if self.sample_truth else np.zeros(0, np.int64)
        score = np.concatenate(self.sample_score) if self.sample_score else np.zeros(0)
        if truth.size:
            metrics["sample_auroc_score"] = sample_auroc_score(truth, score, on_undefined="nan")
            metrics["sample_auprc_score"] = sample_auprc_score(truth, score, on_undefined="nan")
        else:
            metrics["sample_auroc_score"] = metrics["sample_auprc_score"] = NAN
        for name in ("auroc", "auprc"):
            metrics[f"voxel_{name}_ci"] = self._ci(name, metrics[f"voxel_{name}_score"])
        t = self.thresholds
        thresholds = {
            "valbest": t["valbest"].value if t.get("valbest") else NAN,
            "healthyq": t["healthyq"].value if t.get("healthyq") else NAN,
            "healthyq_q": self.q,
        }
        return {"metrics": metrics, "thresholds": thresholds, "n_skipped_dice": self.n_tumour_free,
                "curves": self.curves(), "notes": list(self.notes),
                "n_samples": {"positive": int(truth.sum()), "negative": int(truth.size - truth.sum())}}

    def _ci(self, metric: str, value: float) -> list[float]:
        if not math.isfinite(value) or len(self.test.case_histograms) < 2:
            return [NAN, NAN]
        try:
            ci = bootstrap_voxel_ci(self.test, metric=metric, n_boot=self.bootstrap,
                                    level=self.bootstrap_level, seed=self.bootstrap_seed)
        except UndefinedMetricError as exc:
            self.notes.append(f"voxel_{metric}_ci: {exc}")
            return [NAN, NAN]
        return [ci.low, ci.high]

    def curves(self) -> dict[str, Any]:
        """ROC (fpr, tpr) and PR (recall, precision) points of the test voxels, downsampled."""
        return curve_points(self.test, self.curve_points)


def curve_points(acc: VoxelAccumulator, n_points: int = 200) -> dict[str, Any]:
    """At most ``n_points`` ROC and PR points (descending thresholds) from the pooled histogram."""
    hist = acc.histogram
    occupied = hist.counts.any(1)[::-1]
    counts = hist.counts[::-1][occupied].astype(np.float64)
    thresholds = hist.thresholds()[::-1][occupied]
    neg, pos = counts[:, 0], counts[:, 1]
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return {"roc": None, "pr": None, "n_positive": int(n_pos), "n_negative": int(n_neg)}
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    idx = np.unique(np.linspace(0, len(tp) - 1, min(n_points, len(tp))).round().astype(int))
    tpr, fpr = tp[idx] / n_pos, fp[idx] / n_neg
    precision = tp[idx] / np.maximum(tp[idx] + fp[idx], 1.0)
    return {
        "roc": {"fpr": [0.0, *fpr.tolist()], "tpr": [0.0, *tpr.tolist()]},
        "pr": {"recall": tpr.tolist(), "precision": precision.tolist()},
        "thresholds": thresholds[idx].astype(float).tolist(),
        "n_positive": int(n_pos),
        "n_negative": int(n_neg),
    }
