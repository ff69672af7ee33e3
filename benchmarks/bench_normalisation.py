"""Which intensity normalisation lets one FLAIR threshold work across volumes (a quality figure).

Benchmarks pool the voxels of all test volumes and choose *one* threshold, so a normalisation
must put healthy tissue on the same values in every volume. For each intensity step this prints
the FLAIR-threshold baseline's pooled oracle Dice (⌈Dice⌉, one threshold for all volumes, as in
Meissen et al. 2021), pooled voxel AUROC and AUPRC, and the mean per-volume best Dice (one
threshold per volume, which no normalisation can change). The gap between the last and the
first is what the normalisation loses.

    python benchmarks/bench_normalisation.py                       # embedded synthetic data (14 cases)
    python benchmarks/bench_normalisation.py --data ~/BraTS2021_Training_Data --limit 100
    python benchmarks/bench_normalisation.py --steps median-scale zscore --modality t2

Every step runs through the registered preprocessors (third-party steps too: ``--steps NAME``);
images stay on their own 1 mm grid (orient only), brain = the case's brain mask.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _timing import table
from brats_ad.data.loading import load_case
from brats_ad.metrics.dice import oracle_dice_score
from brats_ad.metrics.voxel import VoxelAccumulator
from brats_ad.plugins import get_registries
from brats_ad.preprocess.pipeline import build_pipeline

DEFAULT_STEPS = ("median-scale", "zscore", "percentile-scale")


def cases_for(args: argparse.Namespace, workdir: Path) -> list:
    registries = get_registries()
    if args.data is None:
        entry = registries.datasets.get("synthetic")
        dataset = entry.create(workdir / "synthetic", cases=args.cases, seed=0, modalities=(args.modality,))
    else:
        entry = registries.datasets.get(args.dataset)
        dataset = entry.create(Path(args.data).expanduser(), modalities=(args.modality,))
    cases = [c for c in dataset.cases() if c.seg is not None]
    return cases[: args.limit] if args.limit else cases


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="a BraTS folder (default: generate the synthetic dataset)")
    p.add_argument("--dataset", default="brats", help="dataset plugin for --data (default: brats)")
    p.add_argument("--cases", type=int, default=14, help="synthetic cases to generate (default 14, as the default bench)")
    p.add_argument("--limit", type=int, default=None, help="use at most this many cases")
    p.add_argument("--modality", default="flair", help="the thresholded channel (default flair)")
    p.add_argument("--steps", nargs="+", default=list(DEFAULT_STEPS), help="intensity steps to compare")
    p.add_argument("--tumour-only", action="store_true", help="leave out volumes without tumour (as real BraTS)")
    args = p.parse_args(argv)

    pipelines = {step: build_pipeline(["orient", step]) for step in args.steps}
    pooled = {step: VoxelAccumulator() for step in args.steps}
    per_volume: dict[str, list[float]] = {step: [] for step in args.steps}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cases = cases_for(args, Path(tmp))
        used = 0
        for case in cases:
            scan = load_case(case, (args.modality,))
            labels = scan.seg > 0
            if args.tumour_only and not labels.any():
                continue
            used += 1
            for step, pipeline in pipelines.items():
                out = pipeline(scan)
                mask = out.brain_mask
                scores = out.image[0]
                truth = out.seg > 0
                pooled[step].update(scores, truth, mask=mask)
                if truth[mask].any():
                    one = VoxelAccumulator(bins_log2=16)
                    one.update(scores, truth, mask=mask)
                    per_volume[step].append(oracle_dice_score(one).oracle_dice_score)
    rows = []
    for step in args.steps:
        curve = pooled[step].compute()
        oracle = oracle_dice_score(pooled[step])
        mean_best = float(np.mean(per_volume[step])) if per_volume[step] else float("nan")
        rows.append([step, round(oracle.oracle_dice_score, 3), round(mean_best, 3),
                     round(oracle.oracle_dice_score / mean_best, 2), round(curve.auroc_score, 3),
                     round(curve.auprc_score, 3)])
    source = args.data or f"synthetic ({args.cases} cases, seed 0)"
    print(f"FLAIR-threshold quality by normalisation: {source}, modality {args.modality}, "
          f"{used} volumes ({sum(len(v) for v in per_volume.values()) // max(len(args.steps), 1)} with tumour), "
          f"{time.perf_counter() - start:.0f} s")
    print(table(["step", "pooled ⌈Dice⌉", "per-volume best Dice", "ratio", "voxel AUROC", "voxel AUPRC"], rows))
    print("ratio: pooled / per-volume; 1.0 means one threshold serves every volume as well as its own.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
