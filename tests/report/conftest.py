"""A small bench folder written by hand: results.jsonl plus curves, galleries and histories.

2 dims x 3 models (ae, ganomaly, flair-threshold) x their scorers x 2 seeds, one failed cell
(3D ganomaly + residual, seed 1), and deliberately missing artifacts in 3D.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

MODELS = {
    "ae": ({"latent_size": 64, "loss": "l1"}, [("residual", {"power": 1}, "voxel")]),
    "ganomaly": ({"latent_size": 100}, [("residual", {"power": 1}, "voxel"), ("latent", {}, "constant")]),
    "flair-threshold": ({"modality": "flair"}, [("model-map", {}, "voxel")]),
}
# Voxel AUPRC means per (model, scorer, dims): 2D ganomaly + residual beats the baseline, 3D none.
BASE = {
    ("ae", "residual", 2): 0.30, ("ganomaly", "residual", 2): 0.45, ("ganomaly", "latent", 2): 0.20,
    ("flair-threshold", "model-map", 2): 0.40,
    ("ae", "residual", 3): 0.35, ("ganomaly", "residual", 3): 0.33, ("ganomaly", "latent", 3): 0.15,
    ("flair-threshold", "model-map", 3): 0.38,
}
FAILED = ("ganomaly", "residual", 3, 1)
ERROR = ("TrainingDiverged: training diverged: loss 'adv' is nan at epoch 3, step 12; lower the "
         "learning rate or set amp = \"none\"")


def _metrics(base: float, seed: int, model: str) -> dict:
    d = 0.01 if seed else -0.01
    flair = model == "flair-threshold"
    return {
        "voxel_auroc_score": round(0.6 + base / 2 + d, 4),
        "voxel_auprc_score": round(base + d, 4),
        "dice_valbest_score": round(base * 0.9 + 2 * d, 4), "dice_valbest_std": 0.1,
        "dice_healthyq_score": round(base * 0.8 + (0.2 if flair else 0.0) + d, 4), "dice_healthyq_std": 0.1,
        "oracle_dice_score": round(base + 0.1 + d, 4),
        "sample_auroc_score": round(0.9 - base / 2 + d, 4),
        "sample_auprc_score": round(0.8 - base / 4, 4),
        "voxel_auroc_ci": [0.5, 0.9], "voxel_auprc_ci": [0.1, 0.5],
    }


def _curves(base: float) -> dict:
    fpr = np.linspace(0, 1, 11)
    recall = np.linspace(1, 0, 11)
    return {"roc": {"fpr": fpr.round(4).tolist(), "tpr": (fpr ** (1 - base)).round(4).tolist()},
            "pr": {"recall": recall.round(4).tolist(),
                   "precision": (base + (1 - base) * (1 - recall) ** 2).round(4).tolist()}}


def _gallery(path: Path, kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(3, 4, 16, 16)).astype(np.float32)
    seg = np.zeros((3, 16, 16), np.uint8)
    seg[:, 5:9, 6:10] = 2
    if kind == "constant":
        amap = np.broadcast_to(np.arange(1, 4, dtype=np.float32)[:, None, None], (3, 16, 16)).copy()
    else:
        amap = np.abs(image[:, 3]) + 2.0 * (seg > 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, image=image, seg=seg, map=amap, modalities=np.array(["t1", "t1ce", "t2", "flair"]))


def _history(path: Path, model: str, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["train_loss_g", "train_loss_d"] if model == "ganomaly" else ["train_loss"]
    lines = ["epoch," + ",".join(cols) + ",steps,val_loss,best_val,is_best,lr_g"]
    for epoch in range(1, 6):
        values = [f"{(1.0 + i + seed * 0.1) / epoch:.4f}" for i in range(len(cols))]
        val = "" if epoch == 1 else f"{1.2 / epoch:.4f}"
        lines.append(f"{epoch}," + ",".join(values) + f",10,{val},{val},True,0.0002")
    path.write_text("\n".join(lines) + "\n")


def write_bench(folder: Path) -> Path:
    """The fixture bench folder; returns its results.jsonl."""
    rows = []
    for dims in (2, 3):
        for model, (params, scorers) in MODELS.items():
            for seed in (0, 1):
                trained = model != "flair-threshold"
                hist = f"models/{dims}d/{model}/seed{seed}/history.csv" if trained else None
                if hist and (dims == 2 or seed == 0):
                    _history(folder / hist, model, seed)
                for scorer, sparams, kind in scorers:
                    base = BASE[(model, scorer, dims)]
                    cell = f"{dims}d-{model}-{scorer}-s{seed}"
                    failed = (model, scorer, dims, seed) == FAILED
                    curves = f"cells/{cell}/curves.json"
                    if dims == 2 or model == "ae":  # 3D: only ae has curves; the others point at nothing
                        (folder / curves).parent.mkdir(parents=True, exist_ok=True)
                        (folder / curves).write_text(json.dumps(_curves(base)))
                    gallery = f"cells/{cell}/gallery.npz" if dims == 2 else None
                    if gallery:
                        _gallery(folder / gallery, kind, seed)
                    rows.append({
                        "schema_version": 1, "run_id": f"run-{'ab'[seed]}", "cell_id": cell,
                        "status": "failed" if failed else "done", "error": ERROR if failed else None,
                        "model": model, "model_params": {**params, "spatial_dims": dims},
                        "scorer": scorer, "scorer_params": sparams, "scorer_map_kind": kind,
                        "dims": dims, "seed": seed,
                        "metrics": {} if failed else _metrics(base, seed, model),
                        "thresholds": {"valbest": 0.5, "healthyq": 0.7, "healthyq_q": 0.99},
                        "n_cases": {"train": 40, "val": 10, "test": 20}, "n_skipped_dice": 0 if dims == 2 else 1,
                        "timings": {"train_s": 10.0, "score_s": 1.0, "eval_s": 1.0},
                        "artifacts": {"checkpoint": None, "history": hist,
                                      "curves": None if failed else curves, "gallery": gallery},
                        "config_hash": "c0ffee",
                        "dataset": {"name": "synthetic", "root": "/data/synthetic", "fingerprint": "f00d",
                                    "modalities": ["t1", "t1ce", "t2", "flair"], "pipeline_hash": "9a1b2c3d",
                                    "split_hash": "5e6f7a8b"},
                        "protocol": {"threshold_protocols": ["valbest", "healthyq"], "healthy_quantile": 0.99,
                                     "postprocess": {"erode_brain": 0, "fill": "min", "median_size": 0},
                                     "sample_level": "slice", "training": "tumour-free"},
                        "device": "cuda:0 (NVIDIA H200)",
                        "versions": {"brats_ad": "0.1.0", "torch": "2.13.0", "monai": "1.6.0",
                                     "python": "3.11.9", "plugins": {"brats-ad-ssim": "0.1.0"}},
                        "git_revision": "8b2b067",
                        "created": f"2025-06-0{seed + 1}T12:00:00+00:00",
                    })
    folder.mkdir(parents=True, exist_ok=True)
    results = folder / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return results


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    return write_bench(tmp_path / "runs" / "demo")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(results.jsonl, leaderboard.md) rendered once with figures, shared by a test module."""
    from brats_ad.report import write_leaderboard

    root = tmp_path_factory.mktemp("lb")
    results = write_bench(root / "runs" / "demo")
    out = write_leaderboard(results, root / "leaderboards" / "demo.md")
    return results, out
