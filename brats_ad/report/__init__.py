"""Leaderboards from ``results.jsonl``: markdown tables, protocol paragraph and figures.

Importing this package is cheap and never imports torch: a leaderboard is a pure function of
the results rows (read with :mod:`json`), so it can be rebuilt anywhere, even without a GPU
stack. :func:`write_leaderboard` is the one entry point (``brats-ad leaderboard``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["write_leaderboard"]


def __getattr__(name: str) -> Any:
    # Lazy: ``import brats_ad.report`` stays free of matplotlib until a leaderboard is written.
    if name == "write_leaderboard":
        from brats_ad.report.leaderboard import write_leaderboard

        return write_leaderboard
    raise AttributeError(f"module 'brats_ad.report' has no attribute {name!r}")
