"""``prepare``: load, preprocess and cache every case once, resumably, optionally in parallel.

Each case is loaded (:func:`brats_ad.data.loading.load_case`), run through the pipeline and
written atomically by :func:`brats_ad.data.cache.write_cached_case`, so an interrupted run
leaves only complete cases and a rerun does just the rest. Cases already cached and fresh (same
modalities, same source-file sizes and mtimes) are skipped.

Bad input is a :class:`DataError`. Without ``skip_bad`` the first one stops the run: cases
finished before it stay complete, nothing half-written remains. Missing files are found before
any case is processed (a stat per file). With ``skip_bad`` bad cases are recorded in the
summary and in ``<cache_dir>/failures.json`` and the run goes on. Other exceptions are bugs, not
bad data, and always stop the run.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from brats_ad.data.cache import (
    CACHE_FORMAT_VERSION,
    clean_temp_dirs,
    is_cached,
    source_fingerprint,
    write_cached_case,
)
from brats_ad.data.scan import Case, canonical_modality
from brats_ad.errors import ConfigError, DataError
from brats_ad.io import write_json_atomic
from brats_ad.progress import progress_bar

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

FAILURES_FILE = "failures.json"
PIPELINE_FILE = "pipeline.json"


@dataclass(frozen=True)
class PrepareSummary:
    """What a prepare run did; ``failed`` holds ``(case_id, one-line message)`` pairs."""

    prepared: int
    skipped: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    cache_dir: Path = Path(".")

    @property
    def ok(self) -> bool:
        return not self.failed


def prepare_dataset(
    cases: Iterable[Case],
    pipeline: Any,
    cache_root: Path | str,
    *,
    modalities: Sequence[str] | None = None,
    workers: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
    console: "Console | None" = None,
) -> PrepareSummary:
    """Cache ``cases`` under ``<cache_root>/<pipeline.config_hash()>/`` and say what happened.

    ``pipeline`` is a pipeline object (``__call__``, ``to_config``, ``config_hash``) or a spec
    for :func:`brats_ad.preprocess.pipeline.build_pipeline` (a name or a list of step dicts).
    With ``workers > 1`` cases run in a spawned process pool; the pipeline object is pickled
    once per worker.
    """
    if int(workers) < 1:
        raise ConfigError(f"workers must be >= 1, got {workers!r}; use 1 for no parallelism")
    pipeline = _as_pipeline(pipeline)
    mods = None if modalities is None else tuple(canonical_modality(m) for m in modalities)
    cases = list(cases)
    _check_unique(cases)
    cache_dir = Path(cache_root) / pipeline.config_hash()
    cache_dir.mkdir(parents=True, exist_ok=True)
    clean_temp_dirs(cache_dir)
    config = pipeline.to_config()
    write_json_atomic(
        cache_dir / PIPELINE_FILE,
        {"format_version": CACHE_FORMAT_VERSION, "hash": pipeline.config_hash(), "pipeline": config},
    )

    failed: list[tuple[str, str]] = []
    todo: list[tuple[Case, dict[str, Any]]] = []
    skipped = 0
    for case in cases:  # stat every file first: a missing one stops the run before any write
        try:
            fingerprint = source_fingerprint(case, mods)
        except DataError as exc:
            if not skip_bad:
                raise
            failed.append((case.case_id, str(exc)))
            continue
        if is_cached(cache_dir, case, fingerprint=fingerprint):
            skipped += 1
        else:
            todo.append((case, fingerprint))

    bar = progress_bar(enabled=progress, console=console, eta=True)
    try:
        with bar:
            task = bar.add_task(f"prepare -> {cache_dir.name}", total=len(todo))
            runner = _run_serial if int(workers) == 1 or len(todo) <= 1 else _run_pool
            prepared = runner(todo, pipeline, config, cache_dir, mods, int(workers), skip_bad,
                              failed, lambda: bar.advance(task))
    finally:
        clean_temp_dirs(cache_dir)

    if skip_bad and failed:
        write_json_atomic(
            cache_dir / FAILURES_FILE,
            {"failed": [{"case_id": cid, "message": msg} for cid, msg in failed]},
        )
    elif not failed:
        (cache_dir / FAILURES_FILE).unlink(missing_ok=True)
    summary = PrepareSummary(prepared=prepared, skipped=skipped, failed=failed, cache_dir=cache_dir)
    if progress:
        print_summary(summary, console)
    return summary


def _as_pipeline(pipeline: Any) -> Any:
    if isinstance(pipeline, (str, list, tuple)):
        from brats_ad.preprocess.pipeline import build_pipeline

        return build_pipeline(pipeline)
    if not (callable(pipeline) and all(callable(getattr(pipeline, a, None)) for a in ("to_config", "config_hash"))):
        raise ConfigError(
            f"pipeline must be a name, a list of steps or a Pipeline object, got "
            f"{type(pipeline).__name__}; use brats_ad.preprocess.pipeline.build_pipeline"
        )
    return pipeline


def _check_unique(cases: list[Case]) -> None:
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise DataError(
                f"case id {case.case_id!r} appears twice; case ids must be unique within a "
                "dataset (rename one folder)"
            )
        seen.add(case.case_id)


# -- one case (top level: spawn-safe) --------------------------------------------------------------
def _prepare_one(
    case: Case, pipeline: Any, config: Any, cache_dir: Path, modalities: Sequence[str] | None,
    fingerprint: dict[str, Any],
) -> tuple[str, str | None]:
    """Prepare one case; returns ``(case_id, None)`` or ``(case_id, DataError message)``."""
    from brats_ad.data.loading import load_case

    try:
        scan = load_case(case, modalities, layout="native")  # steps keep any layout: skip a transpose
        scan = pipeline(scan)
        write_cached_case(cache_dir, scan, config, source=fingerprint,
                          extra_meta={"dataset": case.dataset, "naming": case.naming})
    except DataError as exc:
        return case.case_id, str(exc)
    return case.case_id, None


_WORKER_PIPELINE: Any = None


def _init_worker(pipeline: Any) -> None:
    global _WORKER_PIPELINE
    _WORKER_PIPELINE = pipeline


def _prepare_in_worker(
    case: Case, config: Any, cache_dir: Path, modalities: Sequence[str] | None,
    fingerprint: dict[str, Any],
) -> tuple[str, str | None]:
    return _prepare_one(case, _WORKER_PIPELINE, config, cache_dir, modalities, fingerprint)


def _record(result: tuple[str, str | None], skip_bad: bool, failed: list[tuple[str, str]]) -> bool:
    """True when the case was prepared; raises on bad data unless ``skip_bad``."""
    case_id, error = result
    if error is None:
        return True
    if not skip_bad:
        raise DataError(f"{error} (stopped; finished cases are kept - fix it or rerun with --skip-bad)")
    failed.append((case_id, error))
    return False


def _run_serial(todo, pipeline, config, cache_dir, mods, workers, skip_bad, failed, advance) -> int:
    prepared = 0
    for case, fingerprint in todo:
        prepared += _record(_prepare_one(case, pipeline, config, cache_dir, mods, fingerprint), skip_bad, failed)
        advance()
    return prepared


def _run_pool(todo, pipeline, config, cache_dir, mods, workers, skip_bad, failed, advance) -> int:
    # spawn, not fork: the caller may hold threads (torch, rich) that fork would copy mid-lock.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context,
                               initializer=_init_worker, initargs=(pipeline,))
    prepared = 0
    pending: set[Future] = set()
    try:
        pending = {pool.submit(_prepare_in_worker, case, config, cache_dir, mods, fp) for case, fp in todo}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                prepared += _record(future.result(), skip_bad, failed)
                advance()
    finally:
        # On an error: drop queued cases, let running ones finish their (atomic) writes.
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
    return prepared


# -- output ----------------------------------------------------------------------------------------
def print_summary(summary: PrepareSummary, console: "Console | None" = None) -> None:
    """A rich table: prepared, skipped (already cached), failed, and each failure's message."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console(stderr=True, highlight=False)
    table = Table(title=f"prepare: {summary.cache_dir}")
    for column in ("prepared", "skipped (cached)", "failed"):
        table.add_column(column, justify="right")
    table.add_row(str(summary.prepared), str(summary.skipped), str(len(summary.failed)))
    console.print(table)
    for case_id, message in summary.failed:
        console.print(f"[red]failed[/] {escape(case_id)}: {escape(message)}")
    if summary.failed:
        console.print(f"failures recorded in {summary.cache_dir / FAILURES_FILE}")


# -- CLI entry -------------------------------------------------------------------------------------
def prepare_from_cli(
    *,
    data: Path,
    dataset: str,
    modalities: list[str] | None,
    pipeline: str | None,
    cache: Path,
    workers: int,
    skip_bad: bool,
    console: "Console | None" = None,
) -> int:
    """``brats-ad prepare``: resolve the dataset and pipeline, prepare, return the exit code.

    Returns 0 when every case is cached (bad cases skipped under ``--skip-bad`` are listed but
    still 0: skipping was asked for). Errors propagate as :class:`BratsAdError` for the CLI.
    """
    from brats_ad.plugins import get_registries

    data = Path(data)
    if not data.is_dir():
        raise DataError(f"dataset folder {data} does not exist; pass --data DIR with your cases")
    entry = get_registries().datasets.get(dataset)
    overrides: dict[str, Any] = {}
    if modalities:
        overrides["modalities"] = tuple(canonical_modality(m) for m in modalities)
    # Dataset factories take the root folder positionally, then their registered params.
    ds = entry.load()(data, **entry.resolve_params(overrides))
    cases = ds.cases()
    if not cases:
        raise DataError(f"no cases found in {data} by dataset {dataset!r}; check --data and --dataset")
    summary = prepare_dataset(
        cases, resolve_pipeline(pipeline, dataset), cache,
        modalities=overrides.get("modalities"), workers=workers, skip_bad=skip_bad,
        progress=True, console=console,
    )
    return 0 if summary.ok or skip_bad else 1


def resolve_pipeline(spec: str | None, dataset: str = "brats") -> Any:
    """A pipeline from a name, a TOML file (``[[steps]]`` tables with ``name``), or the dataset default."""
    from brats_ad.preprocess.pipeline import build_pipeline

    if spec is None:
        spec = "healthy" if dataset == "healthy" else "brats"
    path = Path(spec)
    if spec.endswith(".toml"):
        import tomllib  # Python >= 3.11; only TOML pipelines need it

        if not path.is_file():
            raise ConfigError(f"pipeline file {path} not found; pass a pipeline name or an existing TOML file")
        try:
            steps = tomllib.loads(path.read_text()).get("steps")
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"pipeline file {path}: invalid TOML ({exc})") from None
        if not isinstance(steps, list) or not steps:
            raise ConfigError(
                f"pipeline file {path}: expected [[steps]] tables each with a 'name', got "
                f"{type(steps).__name__}; see 'brats-ad plugins --kind preprocessors'"
            )
        return build_pipeline(steps)
    return build_pipeline(spec)
