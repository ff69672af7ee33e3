"""Reorder voxel axes to canonical RAS, so every scan's array has the same anatomical layout."""

from __future__ import annotations

import numpy as np
from nibabel import orientations as ornt

from brats_ad.data.scan import Scan
from brats_ad.errors import ConfigError
from brats_ad.preprocess.base import check_scan, with_step


class Orient:
    """Flip/transpose the arrays to RAS+ (nibabel's closest canonical orientation).

    Only axis flips and permutations: no interpolation, voxel values are unchanged and the affine
    is updated so every voxel keeps its world coordinate. Already-RAS scans pass through as is.
    """

    name = "orient"

    def __init__(self, axcodes: str = "RAS") -> None:
        codes = str(axcodes).upper()
        groups = [next((i for i, pair in enumerate(("LR", "AP", "SI")) if c in pair), -1) for c in codes]
        if len(codes) != 3 or sorted(groups) != [0, 1, 2]:
            raise ConfigError(
                f"orient: axcodes must name one of L/R, A/P, S/I each (e.g. 'RAS'), got {axcodes!r}"
            )
        self.axcodes = codes

    def __call__(self, scan: Scan) -> Scan:
        check_scan(scan, self.name)
        affine = np.asarray(scan.affine, dtype=float)
        start = ornt.io_orientation(affine)
        transform = ornt.ornt_transform(start, ornt.axcodes2ornt(self.axcodes))
        before = "".join(ornt.aff2axcodes(affine))
        if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
            return with_step(scan, self.name, {"from": before, "to": self.axcodes, "changed": False})
        shape = scan.spatial_shape
        # apply_orientation returns views (flips, transposes); later steps copy when they write.
        # Channels last for nibabel, then back: views only, no copy of the volume.
        image = np.moveaxis(ornt.apply_orientation(np.moveaxis(scan.image, 0, -1), transform), -1, 0)
        seg = None if scan.seg is None else ornt.apply_orientation(scan.seg, transform)
        mask = None if scan.brain_mask is None else ornt.apply_orientation(scan.brain_mask, transform)
        new_affine = affine @ ornt.inv_ornt_aff(transform, shape)
        return with_step(
            scan,
            self.name,
            {"from": before, "to": self.axcodes, "changed": True},
            image=image,
            seg=seg,
            brain_mask=mask,
            affine=new_affine,
        )

