"""Run the CPU benchmark set, print each script's table, and a summary of what passed.

Every script runs in its own subprocess (same Python) with sizes that fit a small CPU; a
script that fails or times out is reported and the rest still run. Exit status 1 if any failed.

    python benchmarks/run_all.py                 # CPU set, small sizes (~25 min on 2 busy cores)
    python benchmarks/run_all.py --quick         # smoke sizes (~5 min); skips the whole default bench
    python benchmarks/run_all.py --only metrics sliding_window
    python benchmarks/run_all.py --anomalib-python /path/to/venv/bin/python   # GANomaly vs anomalib

The GPU set is benchmarks/gpu_check.sh.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (script, full-run args, --quick args or None to skip under --quick)
SCRIPTS: dict[str, tuple[str, list[str], list[str] | None]] = {
    "cli_startup": ("bench_cli_startup.py", [], []),
    "prepare": ("bench_prepare.py", ["--cases", "2"], ["--cases", "1"]),
    "cache_read": ("bench_cache_read.py", ["--seconds", "1"], ["--seconds", "0.3"]),
    "metrics": ("bench_metrics.py", ["--sizes", "1e6", "1e7"], ["--sizes", "1e6", "--chunk", "1e5"]),
    "ganomaly_step": ("bench_ganomaly_step.py", ["--batch", "8", "--steps", "3", "--warmup", "1"],
                      ["--batch", "4", "--width", "16", "--steps", "2", "--warmup", "1"]),
    "ganomaly3d_step": ("bench_ganomaly3d_step.py",
                        ["--size", "32", "--batch", "2", "--width", "16", "--latent", "32", "--steps", "3"],
                        ["--size", "32", "--batch", "1", "--width", "8", "--latent", "16", "--steps", "2", "--no-2d"]),
    "sliding_window": ("bench_sliding_window.py",
                       ["--width", "8", "--channels", "1", "--latent", "32", "--overlap", "0.25", "--repeats", "1"],
                       ["--shape", "96", "96", "80", "--patch", "32", "--width", "8", "--channels", "1",
                        "--latent", "16", "--overlap", "0.25", "--repeats", "1"]),
    "normalisation": ("bench_normalisation.py", [], ["--cases", "4"]),
    "normalisation_models": ("bench_normalisation_models.py", [], None),
    "default_bench": ("bench_default.py", [], None),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke sizes; skip the whole default bench")
    p.add_argument("--only", nargs="+", choices=sorted(SCRIPTS), help="run only these")
    p.add_argument("--timeout", type=float, default=None, help="seconds per script (default 1200, --quick 300)")
    p.add_argument("--anomalib-python", default=None,
                   help="a Python with anomalib (and brats_ad) installed, used for bench_ganomaly_step.py")
    args = p.parse_args(argv)
    timeout = args.timeout or (300.0 if args.quick else 1200.0)

    summary: list[tuple[str, str, float]] = []
    for name, (script, full, quick) in SCRIPTS.items():
        if args.only and name not in args.only:
            continue
        script_args = quick if args.quick else full
        if script_args is None:
            summary.append((name, "skipped (--quick)", 0.0))
            continue
        python = args.anomalib_python if (name == "ganomaly_step" and args.anomalib_python) else sys.executable
        cmd = [python, str(HERE / script), *script_args]
        print(f"\n=== {name}: {' '.join([Path(cmd[0]).name, *cmd[1:]])}", flush=True)
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True, timeout=timeout)
            status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
            print(proc.stdout.rstrip())
            if proc.returncode != 0:
                print("\n".join(proc.stderr.rstrip().splitlines()[-20:]))
        except subprocess.TimeoutExpired as exc:
            status = f"FAILED (timeout {timeout:.0f} s)"
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            print(out.rstrip())
        summary.append((name, status, time.perf_counter() - start))

    print("\n=== summary")
    width = max(len(n) for n, _, _ in summary) if summary else 4
    for name, status, seconds in summary:
        print(f"{name:{width}s}  {seconds:7.1f} s  {status}")
    return 1 if any(s.startswith("FAILED") for _, s, _ in summary) else 0


if __name__ == "__main__":
    raise SystemExit(main())
