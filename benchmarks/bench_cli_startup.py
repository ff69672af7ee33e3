"""How fast `brats-ad plugins` answers, against a bare `python -c pass` in the same run.

Prints a table: median wall time over repeated runs and the ratio. Goal: well under a second,
and no heavy import on the start-up path (the test suite checks the imports; this prints time).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def _median_seconds(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(repeats: int = 7) -> None:
    bare = _median_seconds([sys.executable, "-c", "pass"], repeats)
    rows = [
        ("python -c pass (reference)", bare),
        ("brats-ad --help", _median_seconds([sys.executable, "-m", "brats_ad", "--help"], repeats)),
        ("brats-ad plugins", _median_seconds([sys.executable, "-m", "brats_ad", "plugins"], repeats)),
        ("brats-ad plugins --json", _median_seconds([sys.executable, "-m", "brats_ad", "plugins", "--json"], repeats)),
    ]
    print(f"{'command':32s} {'median s':>9s} {'x bare python':>14s}")
    for name, seconds in rows:
        print(f"{name:32s} {seconds:9.3f} {seconds / bare:14.1f}")


if __name__ == "__main__":
    main()
