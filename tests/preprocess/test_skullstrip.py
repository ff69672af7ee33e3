"""Atlas skull stripping on a real head moved by a known rigid transform (needs ../shared)."""

from pathlib import Path

import numpy as np
import pytest

from brats_ad.data.scan import Scan
from brats_ad.errors import ConfigError
from brats_ad.preprocess.skullstrip import SkullStrip

ATLAS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "brats_space_atlas"
needs_atlas = pytest.mark.skipif(
    not (ATLAS / "t1_brats_space.nii.gz").is_file(), reason=f"atlas not found at {ATLAS} (../shared/data)"
)


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def moved_head():
    """The with-skull atlas and its true brain mask, rotated ~9 degrees and shifted ~10 mm."""
    import nibabel as nib
    import SimpleITK as sitk
    from nibabel.processing import resample_from_to

    from brats_ad.preprocess import _sitk

    def load(name):
        img = nib.load(str(ATLAS / name))
        return nib.as_closest_canonical(nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine))

    head = load("t1_brats_space.nii.gz")
    # the two files are stored in different orientations: compare in physical space
    brain = np.asarray(resample_from_to(load("t1_skullstripped_brats_space.nii.gz"), head, order=0).dataobj) > 0
    data, affine = np.asarray(head.dataobj, dtype=np.float32), head.affine
    move = sitk.Euler3DTransform()
    centre = affine @ [120, 120, 77, 1]
    move.SetCenter([-centre[0], -centre[1], centre[2]])  # RAS -> LPS
    move.SetRotation(*np.deg2rad([9.0, -6.0, 8.0]))
    move.SetTranslation((9.0, -8.0, 6.0))
    grid = _sitk.reference_grid(data.shape, affine)
    moved = _sitk.resample_array(data, affine, grid, move)
    moved_brain = _sitk.resample_array(brain.astype(np.float32), affine, grid, move) >= 0.5
    # a different scanner: intensity scale, bias field and noise
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 1, data.shape[0])[:, None, None]
    moved = moved * (1 + 0.2 * x) * 0.4 + rng.normal(0, 0.01 * moved.max(), moved.shape)
    return {"image": moved.astype(np.float32), "brain": moved_brain, "affine": affine,
            "atlas_brain": brain, "atlas_head": data}


@pytest.mark.slow
@needs_atlas
def test_skullstrip_native_recovers_the_brain_of_a_moved_head(moved_head):
    scan = Scan("atlas-moved", moved_head["image"][None], ("t1",), moved_head["affine"])
    out = SkullStrip(space="native", sampling=0.1)(scan)
    dice = _dice(out.brain_mask, moved_head["brain"])
    print(f"skullstrip native brain-mask Dice = {dice:.4f}")
    assert dice >= 0.93
    assert out.spatial_shape == scan.spatial_shape and np.allclose(out.affine, scan.affine)
    assert np.all(out.image[0][~out.brain_mask] == 0)  # BraTS convention: exact-zero background
    assert out.meta["steps"][-1]["name"] == "skullstrip"


@pytest.mark.slow
@needs_atlas
def test_skullstrip_template_space_lands_on_the_brats_grid(moved_head):
    scan = Scan("atlas-moved", moved_head["image"][None], ("t1",), moved_head["affine"])
    out = SkullStrip(space="template", sampling=0.1)(scan)
    assert out.spatial_shape == (240, 240, 155)
    dice = _dice(out.brain_mask, moved_head["atlas_brain"])
    print(f"skullstrip template-space brain-mask Dice = {dice:.4f}")
    assert dice >= 0.93
    # the head was moved back: it correlates with the unmoved atlas inside the brain
    brain = out.brain_mask & moved_head["atlas_brain"]
    r = np.corrcoef(out.image[0][brain], moved_head["atlas_head"][brain])[0, 1]
    assert r > 0.9
    # the affine points into the subject's world: mapping the mask back recovers the moved brain
    from brats_ad.preprocess.pipeline import map_to_input_grid

    meta = {"original_shape": list(scan.spatial_shape), "original_affine": scan.affine.tolist()}
    back = map_to_input_grid(out.brain_mask.astype(np.float32), meta, affine=out.affine) >= 0.5
    assert _dice(back, moved_head["brain"]) >= 0.93


@pytest.mark.parametrize("kwargs, match", [({"space": "mni"}, "space"), ({"threshold": 1.5}, "threshold"),
                                          ({"template": "/nonexistent"}, "template folder")])
def test_skullstrip_rejects_bad_params(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SkullStrip(**kwargs)


def test_shipped_template_is_small_and_carries_its_notice():
    from brats_ad.preprocess.skullstrip import TEMPLATE_DIR

    sizes = {p.name: p.stat().st_size for p in TEMPLATE_DIR.iterdir()}
    assert "copyright.md" in sizes and "Collins" in (TEMPLATE_DIR / "copyright.md").read_text()
    assert sum(sizes.values()) < 1_000_000
