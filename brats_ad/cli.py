"""The ``brats-ad`` command line: thin subcommands that parse, resolve and call one library function.

Start-up stays light: this module imports only the standard library at import time, and each
subcommand imports what it needs when it runs, so ``--help`` and ``plugins`` never import torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from brats_ad import __version__


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


# -- brats-ad plugins ------------------------------------------------------------------------------
def _cmd_plugins(args: argparse.Namespace) -> int:
    from brats_ad.plugins import load_registries, make_plugin_manager
    from brats_ad.registry import KINDS

    pm = make_plugin_manager()
    registries = load_registries(pm)
    kinds = [args.kind] if args.kind else list(KINDS)
    entries = [entry for kind in kinds for entry in registries.of(kind)]
    plugins = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        source = pm.sources.get(name)
        hooks = sorted(caller.name for caller in (pm.get_hookcallers(plugin) or []))
        plugins.append(
            {
                "name": name,
                "distribution": source.distribution if source else None,
                "version": source.version if source else None,
                "hooks": hooks,
            }
        )
    if args.json:
        payload = {
            "brats_ad_version": __version__,
            "components": [entry.to_dict() for entry in entries],
            "plugins": plugins,
        }
        sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True, default=list) + "\n")
        return 0

    from rich.table import Table

    console = _console()
    console.print(f"[bold]brats-ad {__version__}[/] components")
    for kind in kinds:
        rows = [entry for entry in entries if entry.kind == kind]
        if not rows:
            continue
        contract = "requires" if kind == "scorers" else "provides"
        table = Table(title=kind, title_justify="left", show_lines=False)
        table.add_column("name", no_wrap=True, style="bold")
        table.add_column("dims", no_wrap=True)
        if kind in ("models", "scorers"):
            table.add_column(contract, overflow="fold")
        table.add_column("description", overflow="fold", ratio=1)
        table.add_column("source", overflow="fold")
        for entry in rows:
            version = f" {entry.source.version}" if entry.source.version else ""
            cells = [entry.name, "/".join(f"{d}D" for d in sorted(entry.dims))]
            if kind in ("models", "scorers"):
                cells.append(", ".join(sorted(entry.requires if kind == "scorers" else entry.provides)))
            cells += [entry.help, f"{entry.source.distribution}{version}"]
            table.add_row(*cells)
        console.print(table)
    plugin_table = Table(title="plugins (loaded in this order)")
    for column in ("plugin", "distribution", "version"):
        plugin_table.add_column(column, no_wrap=True)
    plugin_table.add_column("hooks", overflow="fold")
    for plugin in plugins:
        plugin_table.add_row(
            plugin["name"],
            plugin["distribution"] or "",
            plugin["version"] or "",
            ", ".join(hook.removeprefix("brats_ad_") for hook in plugin["hooks"]),
        )
    console.print(plugin_table)
    return 0


# -- brats-ad synth --------------------------------------------------------------------------------
def _cmd_synth(args: argparse.Namespace) -> int:
    from brats_ad.data.synthetic import write_synthetic_dataset

    written = write_synthetic_dataset(
        Path(args.out), cases=args.cases, seed=args.seed,
        healthy_fraction=args.healthy_fraction, progress=not args.quiet,
    )
    if not args.quiet:
        _console().print(f"[green]{len(written)} synthetic cases[/] in {args.out}")
    return 0


# -- brats-ad prepare ------------------------------------------------------------------------------
def _cmd_prepare(args: argparse.Namespace) -> int:
    from brats_ad.data.prepare import prepare_from_cli

    return prepare_from_cli(
        data=Path(args.data),
        dataset=args.dataset,
        modalities=args.modalities,
        pipeline=args.pipeline,
        cache=Path(args.cache),
        workers=args.workers,
        skip_bad=args.skip_bad,
        console=_console(),
    )


# -- brats-ad train --------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    from brats_ad.train.run import train_from_config

    console = _console()
    checkpoint = train_from_config(
        Path(args.config), progress=not args.quiet, resume=not args.no_resume, console=console
    )
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        console.print(f"[green]checkpoint[/] {checkpoint}")
    return 0


# -- brats-ad predict ------------------------------------------------------------------------------
def _cmd_predict(args: argparse.Namespace) -> int:
    from brats_ad.infer.predict import predict_case

    console = _console()
    written = predict_case(
        Path(args.checkpoint), Path(args.case), Path(args.out), args.scorer or None,
        device=args.device, progress=not args.quiet, console=console,
    )
    for scorer, path in written.items():
        console.print(f"[green]{scorer}[/] {path}")
    return 0


# -- brats-ad leaderboard --------------------------------------------------------------------------
def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from brats_ad.report.leaderboard import write_leaderboard

    out = write_leaderboard(Path(args.results), Path(args.out) if args.out else None,
                            primary=args.primary, figures=not args.no_figures)
    _console().print(f"[green]leaderboard[/] {out}")
    return 0


# -- brats-ad bench --------------------------------------------------------------------------------
def _cmd_bench(args: argparse.Namespace) -> int:
    from brats_ad.bench.resolve import resolve_bench_config
    from brats_ad.bench.runner import run_config

    console = _console()
    workers = args.workers
    if workers is not None and workers != "per-gpu":
        workers = int(workers)
    flags = {"partition": args.partition, "gpus_per_node": args.gpus, "cpus_per_task": args.cpus,
             "timeout_min": args.time, "mem_gb": args.mem, "workers": workers,
             "wait": True if args.wait else None}
    cfg = resolve_bench_config(
        Path(args.config) if args.config else None,
        data=Path(args.data) if args.data else None,
        out=Path(args.out) if args.out else None,
        dataset=args.dataset, max_cases=args.max_cases,
        executor=args.executor,
        executor_params={k: v for k, v in flags.items() if v is not None},
        console=console,
    )
    code = run_config(cfg, dry_run=args.dry_run, progress=not args.quiet, console=console)
    if args.dry_run or args.no_leaderboard:
        return code
    from brats_ad.bench.status import bench_status

    out_dir = cfg.out
    if not bench_status(out_dir, refresh=False).finished:  # SLURM jobs still queued or running
        console.print(f"leaderboard once the jobs finish: brats-ad leaderboard {out_dir}")
        return code
    from brats_ad.report.leaderboard import write_leaderboard

    board = write_leaderboard(out_dir / "results.jsonl", Path("leaderboards") / f"{out_dir.name}.md")
    console.print(f"[green]leaderboard[/] {board}")
    return code


# -- brats-ad status -------------------------------------------------------------------------------
def _cmd_status(args: argparse.Namespace) -> int:
    from brats_ad.bench.status import status_from_cli

    return status_from_cli(Path(args.out), as_json=args.json, cells=args.cells, console=_console())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brats-ad",
        description="Benchmark unsupervised brain-tumour anomaly detection on BraTS MRI.",
    )
    parser.add_argument("--version", action="version", version=f"brats-ad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("plugins", help="list registered datasets, preprocessors, models, scorers, metrics, executors")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--kind",
        choices=("datasets", "preprocessors", "models", "scorers", "metrics", "executors"),
        help="list one kind only",
    )
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser("synth", help="write the embedded synthetic BraTS-2021-layout dataset")
    p.add_argument("--out", required=True, help="output folder (created; existing cases are kept)")
    p.add_argument("--cases", type=int, default=24, help="number of cases (default: 24)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--healthy-fraction", type=float, default=0.25, help="fraction of tumour-free cases (default: 0.25)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("prepare", help="preprocess a dataset once into the on-disk cache (resumable)")
    p.add_argument("--data", required=True, help="dataset folder (e.g. BraTS2021_Training_Data)")
    p.add_argument("--dataset", default="brats", help="dataset plugin (default: brats; see 'brats-ad plugins')")
    p.add_argument("--modalities", nargs="+", help="subset of t1 t1ce t2 flair (2023 names accepted); default: all")
    p.add_argument("--pipeline", default=None, help="pipeline name (brats, healthy) or a TOML file; default: the dataset's own")
    p.add_argument("--cache", default=".brats-ad-cache", help="cache folder (default: ./.brats-ad-cache)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default: 1)")
    p.add_argument("--skip-bad", action="store_true", help="record and skip bad cases instead of stopping")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("train", help="train one model on prepared data and write its checkpoint (resumable)")
    p.add_argument("--config", required=True, help="train TOML (see benchmarks/configs/train_ganomaly_2d.toml)")
    p.add_argument("--no-resume", action="store_true", help="start afresh instead of continuing from last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("predict", help="write anomaly maps of one case as NIfTI overlays on the input grid")
    p.add_argument("--checkpoint", required=True, help="best.pt or last.pt written by 'brats-ad train'")
    p.add_argument("--case", required=True, help="one case folder (BraTS 2021 or 2023+ naming)")
    p.add_argument("--out", required=True, help="output folder for <case>_<scorer>.nii.gz")
    p.add_argument("--scorer", action="append", help="scorer name (repeatable); default: every compatible scorer")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("bench", help="run the model x scorer x 2D/3D matrix (default: the embedded synthetic benchmark)")
    p.add_argument("--config", default=None, help="bench TOML (default: the packaged default.toml)")
    p.add_argument("--data", default=None,
                   help="dataset folder (overrides [dataset] root); real BraTS cases under the default config "
                        "are read with the 'brats' plugin into runs/bench/default-<folder>")
    p.add_argument("--dataset", default=None,
                   help="dataset plugin (overrides [dataset] name, drops its params; see 'brats-ad plugins')")
    p.add_argument("--max-cases", type=int, default=None, metavar="N",
                   help="use a seeded subset of N patients (overrides [dataset] max_cases; default: every case)")
    p.add_argument("--out", default=None, help="output folder (overrides [bench] out); rerun to resume")
    p.add_argument("--dry-run", action="store_true", help="print the expanded matrix and a cost estimate")
    p.add_argument("--no-leaderboard", action="store_true", help="do not write leaderboards/<out name>.md at the end")
    p.add_argument("--executor", default=None,
                   help="where units run: local (default; this process) or slurm (one job per trained model)")
    p.add_argument("--partition", default=None, help="slurm: partition")
    p.add_argument("--gpus", type=int, default=None, help="slurm: GPUs per job (default: 1)")
    p.add_argument("--cpus", type=int, default=None, help="slurm: CPUs per job (default: 8)")
    p.add_argument("--time", type=int, default=None, metavar="MIN", help="slurm: time limit per job in minutes (default: 240)")
    p.add_argument("--mem", type=float, default=None, metavar="GB", help="slurm: memory per job in GB (default: 32)")
    p.add_argument("--wait", action="store_true", help="slurm: wait for the jobs and collect them before returning")
    p.add_argument("--workers", default=None, help='local: worker processes, an integer or "per-gpu" (default: 1, in-process)')
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("status", help="done / running / failed / pending cells of a bench folder (and its SLURM jobs)")
    p.add_argument("out", help="the bench output folder (--out of 'brats-ad bench')")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--cells", action="store_true", help="one line per cell, not only the failed ones")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("leaderboard", help="markdown leaderboard and figures from a bench results.jsonl (no torch)")
    p.add_argument("results", help="results.jsonl, or the bench folder holding it")
    p.add_argument("--out", default=None, help="default: leaderboards/<bench folder>.md")
    p.add_argument("--primary", default="voxel_auprc_score",
                   help="ranking metric; *_score: higher is better, *_error/*_loss: lower (default: voxel_auprc_score)")
    p.add_argument("--no-figures", action="store_true", help="markdown only")
    p.set_defaults(func=_cmd_leaderboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from brats_ad.errors import BratsAdError

    try:
        return int(args.func(args) or 0)
    except BratsAdError as exc:
        from rich.markup import escape

        _console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)  # one line, never wrapped
        return 2
    except KeyboardInterrupt:
        _console(stderr=True).print("[yellow]interrupted[/]: finished work is kept; rerun to resume")
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
