"""Streamed voxel AUROC / AUPRC against scikit-learn: time, peak memory, agreement.

For N = 10^7 and 10^8 synthetic voxels (float32 scores, 2% tumour) it times
``VoxelAccumulator`` fed in chunks (default 10^6 voxels, about one BraTS brain) against
``roc_auc_score`` + ``average_precision_score`` on the whole arrays, and prints a table with
ratios. Peak memory is what each method allocates *beyond its inputs* (tracemalloc, which sees
numpy allocations). scikit-learn needs the whole test set in memory; where its estimated need
(~60 bytes/voxel) exceeds the available RAM it is skipped and its time extrapolated linearly
from the largest size that ran (marked ``~``).

Run: ``python benchmarks/bench_metrics.py [--sizes 1e7 1e8] [--chunk 1e6]``.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np

from brats_ad.metrics.voxel import VoxelAccumulator

SKLEARN_BYTES_PER_VOXEL = 60


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n, dtype=np.float32) < 0.02
    scores = rng.standard_normal(n, dtype=np.float32)
    scores += 1.5 * labels
    return scores, labels


def _ours(scores: np.ndarray, labels: np.ndarray, chunk: int) -> tuple[float, int, object]:
    acc = VoxelAccumulator()
    seconds, peak = 0.0, 0
    tracemalloc.start()
    for start in range(0, scores.size, chunk):
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        acc.update(scores[start : start + chunk], labels[start : start + chunk])
        seconds += time.perf_counter() - t0
        peak = max(peak, tracemalloc.get_traced_memory()[1] - before)
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    result = acc.compute()
    seconds += time.perf_counter() - t0
    peak = max(peak, tracemalloc.get_traced_memory()[1] - before)
    tracemalloc.stop()
    return seconds, peak + acc.histogram.nbytes, result


def _sklearn(scores: np.ndarray, labels: np.ndarray) -> tuple[float, int, float, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    auroc = roc_auc_score(labels, scores)
    auprc = average_precision_score(labels, scores)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    return seconds, peak, float(auroc), float(auprc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e7, 1e8])
    parser.add_argument("--chunk", type=float, default=1e6)
    parser.add_argument("--no-sklearn-above", type=float, default=float("inf"),
                        help="skip scikit-learn above this many voxels (extrapolate instead)")
    args = parser.parse_args()
    chunk = int(args.chunk)
    rows = []
    last_sk: tuple[int, float] | None = None
    for size in args.sizes:
        n = int(size)
        scores, labels = _data(n)
        t_ours, m_ours, result = _ours(scores, labels, chunk)
        need = SKLEARN_BYTES_PER_VOXEL * n
        if n <= args.no_sklearn_above and need < 0.8 * _available_bytes():
            t_sk, m_sk, auroc, auprc = _sklearn(scores, labels)
            last_sk = (n, t_sk)
            d_auroc, d_auprc, sk_note = abs(result.auroc_score - auroc), abs(result.auprc_score - auprc), ""
        else:
            t_sk = last_sk[1] * n / last_sk[0] if last_sk else float("nan")
            m_sk, d_auroc, d_auprc, sk_note = need, float("nan"), float("nan"), "~"
        rows.append((n, t_ours, m_ours, t_sk, m_sk, sk_note, d_auroc, d_auprc, result))
        del scores, labels

    mib = 2.0**20
    print(f"chunk = {chunk:.0e} voxels; scores float32, 2% positives; memory = peak beyond the inputs")
    print(f"{'N':>6} {'ours s':>8} {'sklearn s':>10} {'speed-up':>9} {'ours MiB':>9} {'sklearn MiB':>12} "
          f"{'mem ratio':>10} {'|dAUROC|':>9} {'|dAUPRC|':>9} {'AUROC bound':>12} {'AUPRC bound':>12}")
    for n, t_ours, m_ours, t_sk, m_sk, note, d_auroc, d_auprc, r in rows:
        print(f"{n:>6.0e} {t_ours:8.2f} {note + format(t_sk, '.2f'):>10} {t_sk / t_ours:8.1f}x {m_ours / mib:9.1f} "
              f"{note + format(m_sk / mib, '.0f'):>12} {m_sk / m_ours:9.1f}x {d_auroc:9.1e} {d_auprc:9.1e} "
              f"{r.auroc_error_bound:12.1e} {r.auprc_error_bound:12.1e}")
    if any(note for *_, note, _, _, _ in rows):
        print("~ scikit-learn skipped (not enough memory): time extrapolated linearly, memory estimated")


if __name__ == "__main__":
    main()
