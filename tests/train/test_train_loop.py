"""The one training loop on CPU: determinism, resume, NaN stop, early stopping, best.pt, logs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from _train_models import FlatThreshold, TensorSet, TinyAE, TinyAEConfig
from brats_ad.train import CheckpointError, TrainingDiverged
from brats_ad.train.checkpoint import load_checkpoint
from brats_ad.train.config import AugmentSettings, TrainSettings
from brats_ad.train.device import seed_everything
from brats_ad.train.loop import fit

SETTINGS = TrainSettings(epochs=2, batch_size=4, seed=3, device="cpu", patience=None)


def _model(**kw) -> TinyAE:
    seed_everything(0)
    return TinyAE(TinyAEConfig(**kw))


def _data(dims: int = 2, n: int = 12, seed: int = 0) -> TensorSet:
    return TensorSet(n, (1,) + (16,) * dims if dims == 2 else (1,) + (8,) * dims, seed=seed)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("dims", [2, 3], ids=["2d", "3d"])
def test_two_runs_with_one_seed_give_identical_weights(tmp_path: Path, dims: int) -> None:
    aug = AugmentSettings(enabled=True, affine_prob=0.5, intensity_prob=0.5)
    settings = TrainSettings(epochs=2, batch_size=4, seed=3, device="cpu", patience=None, augmentation=aug)
    runs = []
    for name in ("a", "b"):
        model = _model(spatial_dims=dims, dropout=0.2)
        fit(model, _data(dims), _data(dims, 4, seed=1), tmp_path / name, name="tiny-ae", settings=settings, progress=False)
        runs.append(_weights(model))
    assert _same(*runs)
    other = _model(spatial_dims=dims, dropout=0.2)
    fit(other, _data(dims), _data(dims, 4, seed=1), tmp_path / "c", name="tiny-ae",
        settings=TrainSettings(**{**SETTINGS.__dict__, "seed": 4, "augmentation": aug}), progress=False)
    assert not _same(runs[0], _weights(other))


def test_resume_reaches_the_weights_of_an_uninterrupted_run(tmp_path: Path) -> None:
    four = TrainSettings(epochs=4, batch_size=4, seed=1, device="cpu", patience=None,
                         augmentation=AugmentSettings(enabled=True))
    straight = _model(dropout=0.2)
    fit(straight, _data(), _data(n=4, seed=1), tmp_path / "straight", name="tiny-ae", settings=four, progress=False)

    two = TrainSettings(**{**four.__dict__, "epochs": 2})
    first = _model(dropout=0.2)
    fit(first, _data(), _data(n=4, seed=1), tmp_path / "resumed", name="tiny-ae", settings=two, progress=False)
    seed_everything(123)  # a fresh process: other global RNG state, fresh weights
    resumed = TinyAE(TinyAEConfig(dropout=0.2))
    result = fit(resumed, _data(), _data(n=4, seed=1), tmp_path / "resumed", name="tiny-ae", settings=four, progress=False)

    assert result.epochs == 4 and result.status == "finished"
    assert _same(_weights(straight), _weights(resumed))
    rows = [json.loads(line) for line in (tmp_path / "resumed" / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    again = fit(resumed, _data(), _data(n=4, seed=1), tmp_path / "resumed", name="tiny-ae", settings=four, progress=False)
    assert again.status == "already_done" and again.epochs == 4


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path: Path) -> None:
    fit(_model(), _data(), _data(n=4), tmp_path, name="tiny-ae", settings=SETTINGS, progress=False)
    with pytest.raises(CheckpointError, match=r"another config \(differs in lr\).*another output dir"):
        fit(_model(lr=0.5), _data(), _data(n=4), tmp_path, name="tiny-ae", settings=SETTINGS, progress=False)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    # 12 samples / batch 4 = 3 steps per epoch: step 5 is in epoch 2
    settings = TrainSettings(epochs=3, batch_size=4, seed=0, device="cpu", patience=None)
    model = _model(nan_at_step=5)
    with pytest.raises(TrainingDiverged, match=r"loss 'recon' is nan at epoch 2, step 2; the last good checkpoint \(epoch 1\)") as info:
        fit(model, _data(), _data(n=4), tmp_path, name="tiny-ae", settings=settings, progress=False)
    assert (info.value.epoch, info.value.step, info.value.loss) == (2, 2, "recon")
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["status"] == "diverged" and state["last_good_epoch"] == 1 and "epoch 2, step 2" in state["error"]
    events = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "diverged" and events[-1]["value"] == "nan"
    with open(tmp_path / "history.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1]


def test_early_stopping_on_a_flat_validation_loss(tmp_path: Path) -> None:
    settings = TrainSettings(epochs=20, batch_size=4, seed=0, device="cpu", patience=2)
    model = _model(optimizer="sgd", lr=0.0)  # nothing changes: the validation loss is flat
    result = fit(model, _data(), _data(n=4), tmp_path, name="tiny-ae", settings=settings, progress=False)
    assert result.status == "early_stopped"
    assert result.epochs == 3  # the best at epoch 1, then `patience` epochs without improvement
    assert result.best_epoch == 1 and result.checkpoint == tmp_path / "best.pt"
    assert json.loads((tmp_path / "state.json").read_text())["status"] == "early_stopped"


def test_best_checkpoint_is_the_lowest_validation_loss(tmp_path: Path) -> None:
    settings = TrainSettings(epochs=5, batch_size=4, seed=0, device="cpu", patience=None)
    model = _model(lr=0.3)  # a large step: the validation loss goes up and down
    result = fit(model, _data(), _data(n=4, seed=1), tmp_path, name="tiny-ae", settings=settings, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in rows]
    best_epoch = min(range(len(vals)), key=vals.__getitem__) + 1
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == best_epoch == result.best_epoch
    assert best["best_val"] == pytest.approx(min(vals))
    assert [r["is_best"] for r in rows].count(True) >= 1


def test_log_files_hold_one_row_per_epoch(tmp_path: Path) -> None:
    fit(_model(), _data(), _data(n=4), tmp_path, name="tiny-ae", settings=SETTINGS, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        for key in ("train_recon", "train_half", "val_loss", "epoch_time_s", "samples_per_s", "lr_ae", "steps", "samples"):
            assert key in row, key
        assert row["train_half"] == pytest.approx(row["train_recon"] / 2)
        assert row["steps"] == 3 and row["samples"] == 12 and row["lr_ae"] == pytest.approx(1e-2)
    with open(tmp_path / "history.csv") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [float(r["val_loss"]) for r in csv_rows] == pytest.approx([r["val_loss"] for r in rows])
    assert not list(tmp_path.glob(".*tmp"))  # no temp files left behind


def test_steps_per_epoch_caps_an_epoch(tmp_path: Path) -> None:
    settings = TrainSettings(epochs=1, batch_size=2, seed=0, device="cpu", steps_per_epoch=2)
    fit(_model(), _data(), None, tmp_path, name="tiny-ae", settings=settings, progress=True)
    row = json.loads((tmp_path / "history.jsonl").read_text())
    assert row["steps"] == 2 and row["val_loss"] is None
    assert not (tmp_path / "best.pt").exists()  # no validation data: nothing to select on


def test_training_free_model_writes_a_checkpoint_without_training(tmp_path: Path) -> None:
    model = FlatThreshold(TinyAEConfig())
    data = _data()
    result = fit(model, data, None, tmp_path, name="flat", settings=SETTINGS, progress=False)
    assert result.status == "no_training" and result.checkpoint == tmp_path / "last.pt"
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["epoch"] == 0 and ckpt["optimizers"] == {}
    assert float(ckpt["state_dict"]["mean"]) == pytest.approx(float(data.data.mean()), abs=1e-5)


def test_validation_loss_must_be_per_sample(tmp_path: Path) -> None:
    class Scalar(TinyAE):
        def validation_loss(self, x):
            return super().validation_loss(x).mean()

    seed_everything(0)
    with pytest.raises(Exception, match=r"validation_loss must return one loss per sample"):
        fit(Scalar(TinyAEConfig()), _data(), _data(n=4), tmp_path, name="tiny-ae", settings=SETTINGS, progress=False)


def test_multi_phase_model_validates_only_once_ready_and_stops_when_complete(tmp_path: Path) -> None:
    """f-AnoGAN trains a GAN, then an encoder: no validation loss before the encoder phase,
    and no pointless epochs after the last phase."""
    import json as _json

    from brats_ad.models.anogan import AnoGAN

    seed_everything(0)
    model = AnoGAN.from_params(spatial_dims=2, in_channels=1, image_size=16, latent_size=8, width=4,
                               gan_steps=2, encoder_steps=2, n_critic=1)
    settings = TrainSettings(epochs=10, batch_size=4, seed=0, device="cpu", patience=None, steps_per_epoch=1)
    result = fit(model, _data(n=8), _data(n=4, seed=1), tmp_path, name="f-anogan", settings=settings, progress=False)
    rows = [_json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [row["val_loss"] is None for row in rows] == [True, True, False, False]
    assert result.epochs == 4 and model.training_complete
    assert result.best_epoch in (3, 4)
