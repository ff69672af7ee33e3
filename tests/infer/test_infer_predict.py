"""``predict_case``: raw case in, one NIfTI per scorer out, on the input scan's grid and header."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from _infer_helpers import FittedScorer, data_factories, registries_with_test_scorers
from brats_ad.errors import ConfigError, UnknownComponent
from brats_ad.infer.fitting import scorer_state_path
from brats_ad.infer.predict import predict_case

FACTORIES = data_factories()
REAL_CASE = "real_brats2023_met/BraTS-MET-00110-000"


@pytest.fixture(scope="module")
def regs():
    return registries_with_test_scorers()


def _train(root: Path, regs, model: str, params: str, *, dims: int = 2, pipeline: str, slice_size: int,
           patch_size: int = 8, shape=(24, 26, 20), affine=None, modalities=("t1ce", "flair")) -> Path:
    """Prepare a tiny cache from synthetic cases and run ``train_from_config`` (1 epoch)."""
    from brats_ad.train.run import train_from_config

    raw = root / "raw"
    for i in range(4):
        FACTORIES.write_brats_case(raw, f"BraTS-GLI-{i:05d}-000", naming="2023", shape=shape,
                                   modalities=modalities, rng=i, affine=affine)
    config = root / "train.toml"
    config.write_text(f"""
[data]
dataset = "brats"
data_dir = "{raw}"
cache_dir = "{root / 'cache'}"
pipeline = {pipeline}
modalities = {json.dumps(list(modalities))}
dims = {dims}
slice_size = {slice_size}
patch_size = {patch_size}
val = 1
test = 1

[model]
name = "{model}"
params = {params}

[train]
epochs = 1
batch_size = 16
device = "cpu"
patience = 0

[output]
dir = "{root / 'run'}"
""")
    return train_from_config(config, progress=False, registries=regs)


def _assert_overlay(path: Path, reference: Path) -> np.ndarray:
    """The map has exactly the input scan's shape, affine, sform and qform, float32 and finite."""
    out, ref = nib.load(str(path)), nib.load(str(reference))
    assert np.array_equal(out.shape, ref.shape)
    assert np.allclose(out.affine, ref.affine)
    for getter in ("get_sform", "get_qform"):
        (m_out, c_out), (m_ref, c_ref) = (getattr(img.header, getter)(coded=True) for img in (out, ref))
        assert int(c_out) == int(c_ref)
        assert (m_out is None and m_ref is None) or np.allclose(m_out, m_ref)
    data = np.asanyarray(out.dataobj)
    assert data.dtype == np.float32 and np.isfinite(data).all()
    return data


# -- the required end-to-end check on the real BraTS 2023 sample -----------------------------------------
@pytest.mark.slow
def test_predict_real_case_with_a_trained_autoencoder(tmp_path: Path, shared_data: Path, regs) -> None:
    case_dir = shared_data / REAL_CASE
    pipeline = ('[{name = "orient"}, {name = "resample", spacing = [4, 4, 4]}, {name = "percentile-scale"}, '
                '{name = "crop-pad", shape = [48, 48, 40]}]')
    checkpoint = _train(tmp_path, regs, "ae", "{ channels = [4, 8], strides = [2, 2] }", pipeline=pipeline,
                        slice_size=16, shape=(40, 44, 36), affine=np.diag([4.0, 4.0, 4.0, 1.0]))
    out = tmp_path / "maps"
    written = predict_case(checkpoint, case_dir, out, device="cpu", progress=False, registries=regs)

    # defaults: every compatible scorer (t-residual, t-latent, plus any built-in ones), one file each
    assert {"t-residual", "t-latent"} <= set(written) and not {"t-map", "t-fitted"} & set(written)
    reference = case_dir / "BraTS-MET-00110-000-t1c.nii.gz"  # first modality of the run
    assert sorted(out.glob("*.nii.gz")) == sorted(written.values())
    for name, path in written.items():
        assert path == out / f"BraTS-MET-00110-000_{name}.nii.gz"
        data = _assert_overlay(path, reference)
        assert data.shape == (240, 240, 155) and data.max() > data.min()
    report = json.loads((out / "BraTS-MET-00110-000_predict.json").read_text())
    assert report["model"] == "ae" and set(report["scorers"]) == set(written)
    assert "anomaly_map" in report["skipped_scorers"]["t-map"]
    assert report["input"]["shape"] == [240, 240, 155] and report["timing_s"]["total"] > 0
    assert {"brats_ad", "torch", "numpy", "nibabel"} <= set(report["versions"])


@pytest.mark.slow
def test_predict_real_case_flair_threshold_is_the_scaled_flair(tmp_path: Path, shared_data: Path, regs) -> None:
    """Training-free checkpoint written directly; on the real scan the map equals its FLAIR."""
    from brats_ad.data.brats import BratsDataset
    from brats_ad.data.loading import load_case
    from brats_ad.preprocess.intensity import MedianScale
    from brats_ad.train.checkpoint import make_checkpoint, save_checkpoint

    case_dir = shared_data / REAL_CASE
    model = regs.models.get("flair-threshold").create(modalities=("t2f",), in_channels=1)
    checkpoint = save_checkpoint(make_checkpoint(model, "flair-threshold"), tmp_path / "run" / "last.pt")
    (tmp_path / "run" / "train_config.json").write_text(json.dumps({
        "data": {"dataset": "brats", "dims": 2, "slice_size": 192, "modalities": ["flair"], "pipeline": "brats"},
        "model": {"name": "flair-threshold"}, "train": {"batch_size": 32}, "cache_dir": None,
    }))
    written = predict_case(checkpoint, case_dir, tmp_path / "maps", ["t-map"], device="cpu", progress=False,
                           registries=regs)
    data = _assert_overlay(written["t-map"], case_dir / "BraTS-MET-00110-000-t2f.nii.gz")
    scan = load_case(BratsDataset(case_dir, modalities=("flair",)).cases()[0])
    expected = MedianScale()(scan).image[0]  # the "brats" pipeline's intensity step
    np.testing.assert_allclose(data[scan.brain_mask], expected[scan.brain_mask], atol=2e-3)


# -- known answers on synthetic cases ------------------------------------------------------------------
LPS = np.array([[-1.0, 0, 0, 29], [0, -1.0, 0, 33], [0, 0, 1.0, -5], [0, 0, 0, 1]])


@pytest.mark.parametrize("dims", [2, 3])
def test_flair_threshold_map_on_the_input_grid_is_the_scaled_flair(tmp_path: Path, regs, dims: int) -> None:
    """No training, no resampling: the map must equal the percentile-scaled FLAIR voxel by voxel."""
    from brats_ad.data.brats import BratsDataset
    from brats_ad.data.loading import load_case
    from brats_ad.preprocess.intensity import PercentileScale

    pipeline = '[{name = "orient"}, {name = "percentile-scale"}, {name = "crop-pad", shape = [32, 32, 24]}]'
    checkpoint = _train(tmp_path, regs, "flair-threshold", "{}", dims=dims, pipeline=pipeline, slice_size=32,
                        affine=LPS)
    case_dir = FACTORIES.write_brats_case(tmp_path / "new", "BraTS-GLI-00099-000", naming="2023",
                                          shape=(30, 34, 20), modalities=("t1ce", "flair"), rng=99, affine=LPS)
    written = predict_case(checkpoint, case_dir, tmp_path / "maps", ["t-map"], device="cpu", progress=False,
                           registries=regs)
    assert list(written) == ["t-map"]
    data = _assert_overlay(written["t-map"], case_dir / "BraTS-GLI-00099-000-t1c.nii.gz")

    scan = load_case(BratsDataset(case_dir, modalities=("t1ce", "flair")).cases()[0])
    expected = PercentileScale()(scan).image[1]  # per-voxel, so orientation and crop do not matter
    brain = scan.brain_mask
    np.testing.assert_allclose(data[brain], expected[brain], atol=2e-3)  # float16 cache rounding
    assert np.all(data[~brain] <= data[brain].min() + 1e-6)  # background: the least anomalous value


def test_planted_lesion_lands_on_the_same_input_voxels(tmp_path: Path, regs) -> None:
    """Anisotropic LPS input, resampled to 1 mm, slices resized 40 -> 16 and back, then mapped
    back to the input grid: the bright FLAIR lesion is found where it was planted."""
    affine = np.array([[-1.0, 0, 0, 29], [0, -1.0, 0, 33], [0, 0, 2.0, -5], [0, 0, 0, 1]])
    pipeline = ('[{name = "orient"}, {name = "resample"}, {name = "percentile-scale"}, '
                '{name = "crop-pad", shape = [40, 40, 40]}]')
    checkpoint = _train(tmp_path, regs, "flair-threshold", "{}", pipeline=pipeline, slice_size=16, affine=affine)
    case_dir = FACTORIES.write_brats_case(tmp_path / "new", "BraTS-GLI-00099-000", naming="2023",
                                          shape=(30, 34, 20), modalities=("t1ce", "flair"), rng=99, affine=affine)
    flair_path = case_dir / "BraTS-GLI-00099-000-t2f.nii.gz"
    flair = np.asanyarray(nib.load(str(flair_path)).dataobj).copy()
    lesion = np.zeros(flair.shape, bool)
    lesion[9:17, 18:25, 8:12] = True
    flair[lesion] = 1500
    FACTORIES.write_nifti(flair_path, flair, affine)

    written = predict_case(checkpoint, case_dir, tmp_path / "maps", ["t-map"], device="cpu", progress=False,
                           registries=regs)
    data = _assert_overlay(written["t-map"], case_dir / "BraTS-GLI-00099-000-t1c.nii.gz")
    found = data > 0.5 * data.max()
    dice = 2 * (found & lesion).sum() / (found.sum() + lesion.sum())
    assert dice > 0.7
    np.testing.assert_allclose(np.argwhere(found).mean(0), np.argwhere(lesion).mean(0), atol=0.75)


# -- fitted scorers, scorer choice, errors --------------------------------------------------------------
def test_fitted_scorer_is_fitted_once_on_healthy_validation_and_reused(tmp_path: Path, regs) -> None:
    pipeline = '[{name = "orient"}, {name = "percentile-scale"}, {name = "crop-pad", shape = [32, 32, 24]}]'
    checkpoint = _train(tmp_path, regs, "flair-threshold", "{}", pipeline=pipeline, slice_size=16)
    case_dir = FACTORIES.write_brats_case(tmp_path / "new", "BraTS-GLI-00099-000", naming="2023",
                                          modalities=("t1ce", "flair"), rng=99)
    before = FittedScorer.fit_calls
    first = predict_case(checkpoint, case_dir, tmp_path / "a", ["t-fitted", "t-map"], device="cpu",
                         progress=False, registries=regs)
    assert FittedScorer.fit_calls == before + 1
    state_file = scorer_state_path(checkpoint, "t-fitted")
    assert state_file == checkpoint.parent / "scorers" / "t-fitted.json"
    saved = json.loads(state_file.read_text())
    assert saved["scorer"] == "t-fitted" and set(saved["state"]) == {"mean", "std"}
    assert isinstance(saved["state"]["mean"], float)  # tensors stored as plain JSON

    second = predict_case(checkpoint, case_dir, tmp_path / "b", ["t-fitted"], device="cpu", progress=False,
                          registries=regs)
    assert FittedScorer.fit_calls == before + 1  # reused, not refitted
    a, b = (np.asanyarray(nib.load(str(p["t-fitted"])).dataobj) for p in (first, second))
    np.testing.assert_array_equal(a, b)
    report = json.loads((tmp_path / "b" / "BraTS-GLI-00099-000_predict.json").read_text())
    assert report["scorers"]["t-fitted"]["fitted_from"] == str(state_file)

    state_file.write_text("{ damaged")  # a broken file is refitted and replaced, not an error
    predict_case(checkpoint, case_dir, tmp_path / "c", ["t-fitted"], device="cpu", progress=False, registries=regs)
    assert FittedScorer.fit_calls == before + 2 and json.loads(state_file.read_text())["scorer"] == "t-fitted"


def test_scorer_choice_and_errors(tmp_path: Path, regs) -> None:
    from brats_ad.train.checkpoint import make_checkpoint, save_checkpoint

    model = regs.models.get("flair-threshold").create(modalities=("flair",), in_channels=1)
    checkpoint = save_checkpoint(make_checkpoint(model, "flair-threshold"), tmp_path / "run" / "last.pt")
    case_dir = FACTORIES.write_brats_case(tmp_path / "new", "BraTS-GLI-00099-000", naming="2023",
                                          modalities=("flair",), rng=3)
    with pytest.raises(ConfigError, match=r"no train_config.json beside checkpoint"):
        predict_case(checkpoint, case_dir, tmp_path / "maps", progress=False, registries=regs)

    (tmp_path / "run" / "train_config.json").write_text(json.dumps({
        "data": {"dataset": "brats", "dims": 2, "slice_size": 16, "modalities": ["flair"],
                 "pipeline": [{"name": "orient"}, {"name": "percentile-scale"},
                              {"name": "crop-pad", "shape": [24, 24, 16]}]},
        "model": {"name": "flair-threshold"}, "train": {"batch_size": 8}, "cache_dir": None,
    }))
    with pytest.raises(ConfigError, match=r"scorer 't-residual' cannot score model 'flair-threshold': it needs reconstruction"):
        predict_case(checkpoint, case_dir, tmp_path / "maps", ["t-residual"], progress=False, registries=regs)
    with pytest.raises(UnknownComponent, match=r"did you mean 't-map'"):
        predict_case(checkpoint, case_dir, tmp_path / "maps", ["t-mapp"], progress=False, registries=regs)
    # no cache / split here: the default list skips the scorer needing fitting, with the reason
    written = predict_case(checkpoint, case_dir, tmp_path / "maps", progress=False, registries=regs)
    assert "t-map" in written and "t-fitted" not in written
    report = json.loads((tmp_path / "maps" / "BraTS-GLI-00099-000_predict.json").read_text())
    assert "needs fitting" in report["skipped_scorers"]["t-fitted"]
    assert "reconstruction" in report["skipped_scorers"]["t-residual"]
    with pytest.raises(Exception, match="cannot be rebuilt|not here"):
        predict_case(checkpoint, case_dir, tmp_path / "maps", ["t-fitted"], progress=False, registries=regs)
