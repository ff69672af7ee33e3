"""Slices per second read from the cache at 128 x 128 on one core (``torch.set_num_threads(1)``).

Goal: >= 5,000 slices/s, so that data loading is never the bottleneck of a 2D model on one GPU
(a few DataLoader workers multiply this). Reported for the default cache grid (192 x 192) read
the default way (each case resized to 128 once, into a file beside the cache, then read) and
resized on every read (``resized_cache=False``), for a cache prepared at 128 x 128 (no resize),
with 4 channels and FLAIR only; plus the one-off cost of the per-case resize and 64^3 patches per
second for the 3D path. Arrays are warm in the page cache (read once first), as they are after
the first epoch.

    python benchmarks/bench_cache_read.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from brats_ad.data.cache import CachedCase, write_cached_case
from brats_ad.data.samplers import PatchDataset, SliceDataset
from brats_ad.data.scan import Scan


def write_cache(root: Path, shape: tuple[int, int, int], n: int = 3) -> list[CachedCase]:
    rng = np.random.default_rng(0)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    brain = (grid[0] / 0.8) ** 2 + (grid[1] / 0.9) ** 2 + (grid[2] / 0.95) ** 2 < 1
    cases = []
    for i in range(n):
        image = np.where(brain, rng.uniform(-1, 1, (4, *shape)), -1).astype(np.float32)
        seg = np.zeros(shape, np.uint8)
        seg[tuple(slice(s // 2, s // 2 + s // 8) for s in shape)] = 2
        scan = Scan(f"case{i}", image, ("t1", "t1ce", "t2", "flair"), np.eye(4), seg=seg, brain_mask=brain)
        cases.append(CachedCase(write_cached_case(root, scan, [{"name": "bench"}])))
    return cases


def rate(fn, n_items: int, seconds: float) -> float:
    fn()  # warm: page cache, memmaps, allocator
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        done += n_items
    return done / (time.perf_counter() - t0)


def slice_rate(ds: SliceDataset, seconds: float) -> float:
    n = len(ds)
    order = np.random.default_rng(0).permutation(n)  # shuffled, as in training

    def epoch_part() -> None:
        for i in order[:512]:
            ds[int(i)]

    return rate(epoch_part, min(512, n), seconds)


def loader_rate(ds: SliceDataset, seconds: float) -> float:
    loader = DataLoader(ds, batch_size=64, shuffle=True, num_workers=0, drop_last=True)

    def run() -> None:
        for k, _ in enumerate(loader):
            if k == 7:
                break

    return rate(run, 8 * 64, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-cache-read-"))
    try:
        big = write_cache(tmp / "c192", (192, 192, 160))
        small = write_cache(tmp / "c128", (128, 128, 160))
        # one-off: resize every slice of each case once (what the first epoch pays, per case)
        t0 = time.perf_counter()
        first = SliceDataset(big, size=128)
        for ci in range(len(big)):
            first._resized_slices(ci)
        build_s = (time.perf_counter() - t0) / len(big)
        rows = []
        for label, cases, resized in (("192x192 cache, resized once (default)", big, True),
                                      ("192x192 cache, resize per read", big, False),
                                      ("128x128 cache (no resize)", small, True)):
            for mods in (None, ["flair"]):
                ds = SliceDataset(cases, size=128, modalities=mods, resized_cache=resized)
                name = f"{label}, {'4 ch' if mods is None else 'FLAIR'}"
                rows.append((name + ", ds[i]", slice_rate(ds, args.seconds)))
                rows.append((name + ", DataLoader b64", loader_rate(ds, args.seconds)))
        patches = PatchDataset(big, size=64, stride=32)
        order = list(range(len(patches)))
        patch_per_s = rate(lambda: [patches[i] for i in order], len(order), args.seconds)

        print(f"one core (torch threads = {torch.get_num_threads()}), float16 memmap cache, shuffled order")
        print(f"{'2D slices at 128x128':58s} {'slices/s':>9s} {'x goal':>7s}")
        for name, r in rows:
            print(f"{name:58s} {r:9.0f} {r / 5000:6.2f}x")
        print(f"{'one-off resize of a 192x192x160 4-ch case to 128 (first read)':58s} {build_s * 1000:9.0f} ms/case "
              f"({big[0].num_slices / build_s:.0f} slices/s)")
        print(f"{'3D patches 64^3, 4 ch (192x192x160 cache)':58s} {patch_per_s:9.0f} patches/s")
        default = [r for n, r in rows if "(default)" in n and "4 ch" in n]
        print(f"goal >= 5,000 slices/s: 128 cache {'MET' if min(r for n, r in rows if n.startswith('128')) >= 5000 else 'NOT MET'}; "
              f"192 cache, default path, 4 ch: {'MET' if min(default) >= 5000 else 'NOT MET'} "
              f"(ds[i] {default[0]:.0f}/s, DataLoader {default[1]:.0f}/s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
