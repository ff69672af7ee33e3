"""How the intensity step changes what learned models detect (a quality figure, ~3 min on 2 cores).

``bench_normalisation.py`` shows which normalisation lets one FLAIR threshold serve every volume;
this script shows what the same choice does to trained models. It runs
``benchmarks/configs/normalisation_2d.toml`` (the default bench's synthetic data, 2D, GANomaly and
the AE trained for 600 steps) once per intensity step, each in its own output folder, and prints
voxel AUROC, AUPRC and ⌈Dice⌉ per model x scorer x step. The FLAIR threshold's row shows that
every median-based step gives the baseline the same ranking (any per-volume scale does).

    python benchmarks/bench_normalisation_models.py
    python benchmarks/bench_normalisation_models.py --data data/synthetic --keep runs/normalisation
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from _timing import table
from brats_ad.bench.runner import run_bench

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "normalisation_2d.toml"
MARKER = '{ name = "median-scale" },'
VARIANTS = {
    "median-scale (default: scale 2)": '{ name = "median-scale" },',
    "median-scale, compress, knee 0.8": '{ name = "median-scale", compress = true, knee = 0.8 },',
    "median-scale scale 4": '{ name = "median-scale", scale = 4.0 },',
    "percentile-scale": '{ name = "percentile-scale" },',
    "zscore (background -3)": '{ name = "zscore", background = -3.0 },',
}
METRICS = ("voxel_auroc_score", "voxel_auprc_score", "oracle_dice_score")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="synthetic data folder to reuse (default: generate in a temp folder)")
    p.add_argument("--keep", default=None, help="keep the bench outputs under this folder")
    p.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="run only these steps")
    args = p.parse_args(argv)

    text = CONFIG.read_text()
    if text.count(MARKER) != 1:
        raise SystemExit(f"{CONFIG}: expected the pipeline line {MARKER!r} exactly once")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        data = Path(args.data) if args.data else work / "synthetic"
        for i, (label, line) in enumerate(VARIANTS.items()):
            if args.only and label not in args.only:
                continue
            config = work / f"variant{i}.toml"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(text.replace(MARKER, line))
            out = work / f"variant{i}"
            start = time.perf_counter()
            log = io.StringIO()
            code = run_bench(config, data=data, out=out, progress=False, console=Console(file=log, width=200))
            if code != 0:
                print(log.getvalue()[-2000:], file=sys.stderr)
                raise SystemExit(f"{label}: bench exited {code}")
            print(f"{label}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
            for raw in (out / "results.jsonl").read_text().splitlines():
                row = json.loads(raw)
                alpha = (row.get("scorer_params") or {}).get("alpha")
                scorer = row["scorer"] + (f" (alpha={alpha:g})" if alpha is not None else "")
                rows.append([label, row["model"], scorer] + [round(row["metrics"][m], 3) for m in METRICS])
    rows.sort(key=lambda r: (r[1], r[2], list(VARIANTS).index(r[0])))
    print("Learned models by intensity step: synthetic data (14 cases), 2D 64^2, 600 training steps, seed 0")
    print(table(["step", "model", "scorer", "voxel AUROC", "voxel AUPRC", "⌈Dice⌉"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
