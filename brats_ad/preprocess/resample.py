"""Resample to a fixed voxel spacing, so every scan has the same physical voxel size."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from brats_ad.data.scan import Scan
from brats_ad.errors import ConfigError
from brats_ad.preprocess.base import check_scan, triple, voxel_sizes, with_step


class Resample:
    """Resample to ``spacing`` mm along the voxel axes: linear for images, nearest for masks.

    The centre of voxel (0, 0, 0) stays where it is and the axes keep their directions, so the
    new affine only rescales the columns of the old one. Scans already at ``spacing`` (within
    ``tolerance`` mm) pass through untouched: the BraTS path (1 mm) costs nothing here.
    """

    name = "resample"

    def __init__(self, spacing: Sequence[float] | float = (1.0, 1.0, 1.0), tolerance: float = 1e-3) -> None:
        self.spacing = triple(spacing, "spacing", self.name)
        if not float(tolerance) >= 0:
            raise ConfigError(f"resample: tolerance must be >= 0 mm, got {tolerance!r}")
        self.tolerance = float(tolerance)

    def __call__(self, scan: Scan) -> Scan:
        check_scan(scan, self.name)
        affine = np.asarray(scan.affine, dtype=float)
        old = voxel_sizes(affine)
        new = np.asarray(self.spacing)
        if np.all(np.abs(old - new) <= self.tolerance):
            return with_step(scan, self.name, {"from": old.tolist(), "to": new.tolist(), "changed": False})
        shape_in = np.asarray(scan.spatial_shape)
        ratio = new / old  # input voxels per output voxel, per axis
        # Output voxels whose centres fall inside the input grid (no extrapolated border).
        shape_out = tuple(int(n) for n in np.floor((shape_in - 1) / ratio + 1e-6).astype(int) + 1)
        new_affine = affine.copy()
        new_affine[:3, :3] = affine[:3, :3] * ratio  # scale each column

        def _resample(volume: np.ndarray, order: int) -> np.ndarray:
            return ndimage.affine_transform(
                volume, ratio, output_shape=shape_out, order=order, mode="nearest", prefilter=False
            )

        image = np.stack([_resample(np.asarray(c, dtype=np.float32), 1) for c in scan.image])
        seg = None if scan.seg is None else _resample(np.asarray(scan.seg), 0)
        mask = None
        if scan.brain_mask is not None:
            mask = _resample(np.asarray(scan.brain_mask, dtype=np.uint8), 0).astype(bool)
        return with_step(
            scan,
            self.name,
            {"from": old.tolist(), "to": new.tolist(), "changed": True, "shape": list(shape_out)},
            image=image.astype(np.float32, copy=False),
            seg=seg,
            brain_mask=mask,
            affine=new_affine,
        )
