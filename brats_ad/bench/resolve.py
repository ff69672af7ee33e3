"""From ``brats-ad bench`` arguments to the config that runs: the TOML plus the CLI's overrides."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from brats_ad.bench.config import BenchConfig, load_bench_config
from brats_ad.data.synthetic import MANIFEST

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console


def resolve_bench_config(
    config_path: Path | None = None,
    *,
    data: Path | None = None,
    out: Path | None = None,
    dataset: str | None = None,
    max_cases: int | None = None,
    executor: str | None = None,
    executor_params: Mapping[str, Any] | None = None,
    console: "Console | None" = None,
) -> BenchConfig:
    """The config a ``brats-ad bench`` invocation runs: the TOML plus the CLI's overrides.

    ``brats-ad bench --data ~/BraTS2021_Training_Data`` is the first thing a user with real data
    types. The default config's dataset is ``synthetic``, which would refuse a folder it did not
    generate; so when ``--data`` points at existing case folders without a synthetic manifest and
    no ``--dataset`` is given, the cases are read with the ``brats`` plugin instead, and (without
    ``--out``) the results go to ``runs/bench/<name>-<folder>`` so neither the synthetic results
    nor ``leaderboards/<name>.md`` are overwritten. A note on ``console`` says so.
    """
    cfg = load_bench_config(config_path)
    if data is not None and dataset is None and cfg.dataset.name == "synthetic" and _holds_real_cases(Path(data)):
        dataset = "brats"
        if out is None:
            out = Path("runs/bench") / f"{cfg.name}-{_slug(Path(data).resolve().name)}"
        if console is not None:
            console.print(f"[yellow]note[/] {data} holds case folders that 'brats-ad synth' did not write: "
                          f"reading them with the 'brats' dataset plugin into {out} "
                          "(pass --dataset NAME to choose another plugin"
                          + ("; every case is prepared first, --max-cases N for a quick look)" if max_cases is None
                             else ")"))
    return cfg.with_overrides(data=data, out=out, dataset=dataset, executor=executor,
                              executor_params=executor_params, max_cases=max_cases)


def _holds_real_cases(root: Path) -> bool:
    if not root.is_dir() or (root / MANIFEST).is_file():
        return False
    return any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir())


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "data"
