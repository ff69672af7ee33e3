"""Whole-volume inference: score every slice / window of a processed scan, and ``predict``.

Importing this package is cheap (no torch): the submodules import torch where used.

* :func:`brats_ad.infer.volume.score_volume` -- run a model once per batch over a processed
  ``(C, X, Y, Z)`` volume and give every scorer's map, voxel-aligned with that volume, plus
  per-slice / per-window and per-volume sample scores (the bench reuses it).
* :func:`brats_ad.infer.predict.predict_case` -- ``brats-ad predict``: one raw case folder in,
  one NIfTI anomaly map per scorer out, on the input scan's grid and header.
"""

from __future__ import annotations
