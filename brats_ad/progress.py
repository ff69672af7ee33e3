"""The one rich progress bar every long step shows (prepare, synth, training, bench, scoring)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from rich.console import Console
    from rich.progress import Progress


def progress_bar(
    *, enabled: bool = True, console: "Console | None" = None, field: str | None = None,
    eta: bool = False, transient: bool = False,
) -> "Progress":
    """Description, bar, done/total and elapsed time (``eta``: time remaining instead), plus a
    free-text task field (``field``, e.g. running losses) when given. Disabled bars draw nothing."""
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn() if eta else TimeElapsedColumn()]
    if field:
        columns.append(TextColumn(f"{{task.fields[{field}]}}"))
    return Progress(*columns, console=console, disable=not enabled, transient=transient)
