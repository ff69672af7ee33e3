"""The whole embedded ``brats-ad bench`` (default.toml): wall time and peak memory vs its budget.

Runs ``python -m brats_ad bench --out TMP/out --no-leaderboard --quiet`` in a subprocess whose
working directory is a fresh temp folder, so the synthetic data is generated inside the run
(as on a user's first ``brats-ad bench``) unless ``--data`` points at an existing copy.
Reference: the 10-minute budget the default config promises a 2-core laptop (ratio < 1 is
within budget).

Memory, two figures:

* ``peak RSS (largest process)`` -- ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``: the
  largest resident set of any single process of the tree that was waited for (the kernel keeps
  the max, not the sum);
* ``peak RSS (tree sum, sampled)`` -- the sum of VmRSS over the subprocess and its descendants,
  read from /proc every 0.5 s (Linux only; misses peaks shorter than that).

    python benchmarks/bench_default.py
    python benchmarks/bench_default.py --data data/synthetic --keep   # reuse generated data, keep the output
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _timing import machine, table

BUDGET_S = 600.0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class TreeRss:
    """Polls the summed RSS of a process and its descendants; keeps the peak (KiB)."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval, self.peak_kib = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            todo, total = [self.pid], 0
            while todo:
                pid = todo.pop()
                total += _rss_kib(pid)
                todo.extend(_children(pid))
            self.peak_kib = max(self.peak_kib, total)

    def __enter__(self) -> "TreeRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="bench TOML (default: the packaged default.toml)")
    p.add_argument("--data", default=None, help="existing dataset folder (default: generate in the temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the temp folder and print its path")
    p.add_argument("--timeout", type=float, default=3 * BUDGET_S, help="kill the run after this many seconds")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench_default_"))
    argv_bench = [sys.executable, "-m", "brats_ad", "bench", "--out", str(work / "out"), "--no-leaderboard", "--quiet"]
    if args.config:
        argv_bench += ["--config", str(Path(args.config).resolve())]
    if args.data:
        argv_bench += ["--data", str(Path(args.data).resolve())]
    env = {**os.environ, "BRATS_AD_DISABLE_PLUGIN_AUTOLOAD": "1"}
    log_path = work / "bench.log"
    start = time.perf_counter()
    with open(log_path, "w") as log, subprocess.Popen(argv_bench, cwd=work, stdout=log, stderr=subprocess.STDOUT,
                                                       env=env) as proc, TreeRss(proc.pid) as tree:
        try:
            rc = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = "timeout"
    wall = time.perf_counter() - start
    max_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    results = work / "out" / "results.jsonl"
    n_done = n_failed = 0
    if results.is_file():
        import json

        for line in results.read_text().splitlines():
            if line.strip():
                status = json.loads(line).get("status")
                n_done += status == "done"
                n_failed += status == "failed"

    print(f"brats-ad bench ({args.config or 'packaged default.toml'}; data "
          f"{'given' if args.data else 'generated in the run'}): exit {rc}, cells done {n_done}, failed {n_failed}")
    print(f"machine: {machine()}")
    print(table(["figure", "value", "reference", "ratio"], [
        ["wall time (s)", wall, BUDGET_S, wall / BUDGET_S],
        ["peak RSS, largest process (MiB)", max_rss_mib, "-", "-"],
        ["peak RSS, tree sum sampled (MiB)", tree.peak_kib / 1024, "-", "-"],
    ]))
    if rc != 0:
        print(f"bench exited {rc}; last log lines:")
        print("\n".join(log_path.read_text().splitlines()[-15:]))
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if rc in (0, 1) else 1  # 1: some cells failed (recorded); the timing is still valid


if __name__ == "__main__":
    raise SystemExit(main())
