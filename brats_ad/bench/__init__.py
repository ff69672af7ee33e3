"""``brats-ad bench``: a TOML config -> a matrix of (model, scorer, dims, seed) cells -> results.jsonl.

Importing this package is cheap (no torch): the submodules import what they need.

* :mod:`~brats_ad.bench.config` -- the benchmark TOML parsed into frozen dataclasses, validated.
* :mod:`~brats_ad.bench.matrix` -- expansion into training units and scorer cells, dropped cells.
* :mod:`~brats_ad.bench.runner` -- :func:`~brats_ad.bench.runner.run_bench`: train once, score many.
* :mod:`~brats_ad.bench.evaluate` -- one cell's metrics from streamed maps (validation, then test).
* :mod:`~brats_ad.bench.results` -- per-cell files and ``results.jsonl``, safe for many writers.
"""

from __future__ import annotations
