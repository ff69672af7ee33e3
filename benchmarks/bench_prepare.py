"""Per-case ``prepare`` time vs a bare nibabel decode of the same files, in one run.

Goal: prepare (load + validate + default "brats" pipeline + cache write) at most 1.5x the bare
decode (``nib.load(f).get_fdata``-free: ``np.asanyarray(img.dataobj)`` of every modality + seg),
which is the floor any tool reading gzip NIfTI pays.

    python benchmarks/bench_prepare.py                 # 3 generated 240x240x155 int16 cases
    python benchmarks/bench_prepare.py --real          # the real BraTS 2023 sample in ../shared
    python benchmarks/bench_prepare.py --cases 5 --repeats 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from brats_ad.data.brats import BratsDataset
from brats_ad.data.cache import write_cached_case
from brats_ad.data.loading import gzip_backend, load_case
from brats_ad.data.prepare import prepare_dataset
from brats_ad.preprocess.pipeline import build_pipeline

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real_brats2023_met"
SHAPE = (240, 240, 155)


def write_cases(root: Path, n: int) -> None:
    """BraTS-2021-layout cases: ellipsoid brain of noisy int16 on zero background, gzip NIfTI."""
    rng = np.random.default_rng(0)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    brain = (grid[0] / 0.6) ** 2 + (grid[1] / 0.75) ** 2 + (grid[2] / 0.8) ** 2 < 1
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    for i in range(n):
        cid = f"BraTS2021_{i:05d}"
        folder = root / cid
        folder.mkdir(parents=True)
        for m in ("t1", "t1ce", "t2", "flair"):
            vol = np.zeros(SHAPE, np.int16)
            vol[brain] = rng.normal(600, 120, int(brain.sum())).astype(np.int16)
            nib.save(nib.Nifti1Image(vol, affine), folder / f"{cid}_{m}.nii.gz")
        seg = np.zeros(SHAPE, np.uint8)
        seg[100:130, 110:140, 60:90] = 2
        nib.save(nib.Nifti1Image(seg, affine), folder / f"{cid}_seg.nii.gz")


def bare_decode(case) -> float:
    t = time.perf_counter()
    for path in [*case.images.values(), *([case.seg] if case.seg else [])]:
        np.asanyarray(nib.load(path).dataobj)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="prepare runs (fresh cache each)")
    parser.add_argument("--real", action="store_true", help="use ../shared/data/real_brats2023_met")
    parser.add_argument("--pipeline", default="brats")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    try:
        if args.real:
            root = REAL
        else:
            root = tmp / "data"
            write_cases(root, args.cases)
        cases = BratsDataset(root).cases()
        pipeline = build_pipeline(args.pipeline)
        decode = [bare_decode(c) for c in cases for _ in range(2)]
        prepare = []
        for r in range(args.repeats):
            t = time.perf_counter()
            s = prepare_dataset(cases, pipeline, tmp / f"cache{r}", progress=False)
            prepare.append((time.perf_counter() - t) / max(s.prepared, 1))
        # where the time goes, one case
        case = cases[0]
        t0 = time.perf_counter(); scan = load_case(case, layout="native")  # as prepare calls it
        t1 = time.perf_counter(); out = scan
        step_times = []
        for step in pipeline.steps:
            a = time.perf_counter(); out = step(out); step_times.append((step.name, time.perf_counter() - a))
        out = pipeline(scan)  # the Pipeline wrapper adds meta only
        t2 = t1 + sum(v for _, v in step_times)
        a = time.perf_counter(); write_cached_case(tmp / "parts", out, pipeline.to_config())
        t3 = t2 + time.perf_counter() - a
        d, p = statistics.median(decode), statistics.median(prepare)
        print(f"cases: {len(cases)} ({'real BraTS 2023 sample' if args.real else 'generated'} "
              f"{SHAPE}, 4 modalities int16 gzip{', + seg' if case.seg else ''}); pipeline {args.pipeline!r}; 1 process")
        print(f"prepare gunzips with {gzip_backend()} (the reference: nibabel's default reader); "
              f"torch {'imported' if 'torch' in sys.modules else 'not imported'} (cache float16 cast)")
        print(f"{'measure':38s} {'s / case':>9s} {'x decode':>9s}")
        for name, v in [("bare nibabel decode (floor)", d), ("prepare (load+pipeline+write)", p),
                        ("  load_case (decode + checks)", t1 - t0), ("  pipeline", t2 - t1),
                        *[(f"    {n}", v) for n, v in step_times],
                        ("  cache write (float16 .npy)", t3 - t2)]:
            print(f"{name:38s} {v:9.3f} {v / d:8.2f}x")
        print(f"goal: prepare <= 1.5x decode -> {'MET' if p <= 1.5 * d else 'NOT MET'} ({p / d:.2f}x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
