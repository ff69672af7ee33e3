"""Evaluation metrics: streamed voxel curves, Dice at label-free thresholds, sample level, bootstrap.

Modules (import what you need; this package imports nothing heavy):

- :mod:`~brats_ad.metrics.streaming` -- :class:`ScoreHistogram`, a bounded-memory histogram of
  anomaly scores with positive / negative counts, exact-mergeable across volumes and cases.
- :mod:`~brats_ad.metrics.voxel` -- :class:`VoxelAccumulator` (streamed voxel AUROC / AUPRC with
  certified error bounds, per-case histograms for the bootstrap) and one-shot functions.
- :mod:`~brats_ad.metrics.dice` -- thresholds chosen without test labels (best Dice on validation,
  quantile of healthy validation scores), per-volume Dice at that threshold, oracle ⌈Dice⌉.
- :mod:`~brats_ad.metrics.sample` -- slice / volume level AUROC and AUPRC (scikit-learn).
- :mod:`~brats_ad.metrics.bootstrap` -- patient-level bootstrap confidence intervals.

Conventions: a voxel is called anomalous when ``score >= threshold``; scores are compared as
float32; labels are binary (pass ``seg > 0`` for whole tumour); an undefined metric raises
:class:`~brats_ad.errors.UndefinedMetricError` unless the caller opts in to ``on_undefined``.
"""
