"""The one training loop: every model trains, validates, stops and checkpoints the same way.

Models own their losses and optimisers (:class:`brats_ad.models.base.AnomalyModel`); the loop
owns device, mixed precision, seeding, augmentation, logging, NaN checks, early stopping and
checkpoints. It takes *datasets of healthy samples* (tensors ``(C, *spatial)``, no labels):
the only signal for early stopping and for ``best.pt`` is the model's ``validation_loss`` on
healthy validation samples, so test labels cannot leak into model selection.

Output folder::

    last.pt        every epoch (resume point)       best.pt      lowest healthy-val loss
    history.jsonl  one row per epoch (+ events)     history.csv  the same epoch rows
    state.json     status, epoch, best, error

GPU throughput options (``TrainSettings``; see :mod:`brats_ad.train.gpu`): ``channels_last``
converts the model and every batch to channels-last (any device; same results within float
tolerance), ``compile`` compiles the model's child networks in place (never ``train_step``;
eager when torch.compile is unavailable), and with ``num_workers > 0`` the loaders keep their
workers across epochs and prefetch; batches are pinned on CUDA. ``samples_per_s`` per epoch is
in the history.

Under ``torchrun`` (see :mod:`brats_ad.train.distributed`) each process trains on its share of
every batch (``batch_size`` stays the global batch), gradients are averaged across processes,
validation is split over them and summed, and rank 0 alone writes the files above.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch.utils.data import DataLoader, Dataset

from brats_ad.errors import DataError, PluginError
from brats_ad.train import CheckpointError, TrainingDiverged
from brats_ad.train.checkpoint import BEST, LAST, config_dict, load_checkpoint, make_checkpoint, save_checkpoint, set_rng_state
from brats_ad.train.config import TrainSettings
from brats_ad.train.distributed import DistContext, session
from brats_ad.train.device import (
    LoopOptimizer,
    derive_seed,
    seed_everything,
    select_precision,
    set_deterministic,
    worker_init_fn,
)
from brats_ad.train.gpu import compile_submodules, to_channels_last
from brats_ad.train.history import History, write_state
from brats_ad.progress import progress_bar

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """Where the run left its checkpoints and why it stopped.

    ``checkpoint`` is the one to use downstream: ``best.pt`` when validation ran, else ``last.pt``.
    ``status``: finished, early_stopped, no_training (training-free model) or already_done.
    """

    checkpoint: Path
    last: Path
    best: Path | None
    epochs: int
    status: str
    best_val: float | None
    best_epoch: int | None


def fit(
    model: torch.nn.Module,
    train_data: Dataset | None,
    val_data: Dataset | None,
    out_dir: Path | str,
    *,
    name: str,
    settings: TrainSettings | None = None,
    progress: bool = True,
    resume: bool = True,
    console: "Console | None" = None,
) -> TrainResult:
    """Train ``model`` on healthy ``train_data``, select on healthy ``val_data``, checkpoint to ``out_dir``.

    ``name`` is the model's registry name (saved so :func:`~brats_ad.train.checkpoint.load_model`
    can rebuild it). With ``resume`` an existing ``last.pt`` in ``out_dir`` is continued at the
    next epoch; the result equals an uninterrupted run. Raises :class:`TrainingDiverged` on a NaN
    or infinite loss (``last.pt`` of the previous epoch stays intact). Under torchrun every
    process calls ``fit``; they train one model together and rank 0 writes ``out_dir``.
    """
    s = settings or TrainSettings()
    with session(s.device) as dist:
        return _fit(model, train_data, val_data, Path(out_dir), name=name, settings=s, progress=progress,
                    resume=resume, console=console, dist=dist)


def _fit(model, train_data, val_data, out: Path, *, name: str, settings: TrainSettings, progress: bool,
         resume: bool, console: "Console | None", dist: DistContext) -> TrainResult:
    s, main = settings, dist.is_main
    out.mkdir(parents=True, exist_ok=True)
    device = dist.device
    precision = select_precision(device, s.amp)
    if s.deterministic:
        set_deterministic(True)
    seed_everything(s.seed)
    model.to(device)
    dims = None
    if s.channels_last and getattr(model, "trainable", True) and train_data is not None and len(train_data) > 0:
        dims = _spatial_dims(model, train_data)
        to_channels_last(model, dims)  # before the optimisers exist: they then hold the same tensors
    history = History(out)
    last_path, best_path = out / LAST, out / BEST

    if not getattr(model, "trainable", True):
        return _fit_training_free(model, train_data, name, out, s, device, history, dist)
    if train_data is None or len(train_data) == 0:
        raise DataError(f"no healthy training samples for model {name!r}; check the split and the sampler settings")

    batch_size = dist.per_rank_batch(s.batch_size)  # the global batch split over torchrun processes
    raw_optimizers = dict(model.configure_optimizers())
    scaler = precision.make_scaler(device)
    grad_sync = dist.grad_sync if dist.enabled else None
    optimizers = {k: LoopOptimizer(opt, scaler, k, grad_sync) for k, opt in raw_optimizers.items()}
    if s.compile:  # the networks only: train_step (several optimisers, .tolist()) stays eager
        compiled = compile_submodules(model, device=device)
        log.info("model %r: compiled %s", name, ", ".join(compiled) or "nothing (torch.compile unavailable)")

    start, best_val, best_epoch, bad_epochs = 1, None, None, 0
    if dist.broadcast_flag(resume and last_path.is_file()):  # rank 0 decides; every rank loads
        if not last_path.is_file():
            raise CheckpointError(
                f"rank {dist.rank} cannot see {last_path}, which rank 0 resumes from; put the output "
                "dir on a filesystem every node shares"
            )
        ckpt = _resume(model, raw_optimizers, scaler, name, last_path)
        start = int(ckpt["epoch"]) + 1
        best_val, best_epoch, bad_epochs = ckpt["best_val"], ckpt["best_epoch"], int(ckpt["bad_epochs"])
        if main:
            history.load(up_to_epoch=int(ckpt["epoch"]))
    elif main:
        history.reset()
        best_path.unlink(missing_ok=True)
    dist.broadcast_module(model)  # every rank starts from rank 0's weights

    augment = None
    if s.augmentation.enabled:
        from brats_ad.train.augment import BatchAugment

        augment = BatchAugment(_spatial_dims(model, train_data), s.augmentation)

    generator = torch.Generator()
    sampler = dist.train_sampler(train_data, s.seed)  # None in a single process: the loader shuffles
    n_local = len(sampler) if sampler is not None else len(train_data)
    loader_kw = _loader_options(s, device)
    loader = DataLoader(
        train_data, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
        drop_last=n_local > batch_size, worker_init_fn=worker_init_fn, generator=generator, **loader_kw,
    )
    val_loader = None
    if val_data is not None and len(val_data) > 0:
        val_loader = DataLoader(  # under torchrun each rank validates every N-th sample
            dist.shard(val_data), batch_size=s.val_batch_size or batch_size, shuffle=False,
            worker_init_fn=worker_init_fn, **loader_kw,
        )
    steps = len(loader) if s.steps_per_epoch is None else min(len(loader), s.steps_per_epoch)
    base_state = {"model": name, "device": str(device), "amp": precision.name, "epochs": s.epochs}

    status = "finished"
    if s.patience is not None and bad_epochs >= s.patience:
        status = "early_stopped"
    elif start > s.epochs:
        status = "already_done"
    epoch = start - 1
    bar = progress_bar(enabled=progress and main, console=console, field="losses")
    with bar:
        for epoch in range(start, s.epochs + 1) if status == "finished" else ():
            if main:
                write_state(out, {**base_state, "status": "running", "epoch": epoch, "best_val": best_val, "best_epoch": best_epoch})
            salt = dist.seed_salt  # () in a single process; per rank under torchrun (own dropout, noise)
            seed_everything(derive_seed(s.seed, epoch, *salt))
            generator.manual_seed(derive_seed(s.seed, epoch, 1, *salt))
            if sampler is not None:
                sampler.set_epoch(epoch)
            if augment is not None:
                augment.set_seed(derive_seed(s.seed, epoch, 2, *salt))
            task = bar.add_task(f"epoch {epoch}/{s.epochs}", total=steps, losses="")
            try:
                row = _train_epoch(model, loader, optimizers, scaler, precision, device, augment,
                                   epoch, steps, bar, task, dist, channels_last=dims is not None)
                dist.broadcast_module(model)  # BN statistics (and any out-of-band change) from rank 0
                # Multi-phase models (f-AnoGAN: GAN, then encoder) have no meaningful
                # validation loss until their last phase has started.
                ready = getattr(model, "validation_ready", True)
                row["val_loss"] = (_validate(model, val_loader, precision, device, epoch, dist,
                                             channels_last=dims is not None) if ready else None)
            except TrainingDiverged as exc:
                if main:
                    history.append({"epoch": epoch, "event": "diverged", "step": exc.step, "loss": exc.loss,
                                    "value": exc.value, "error": str(exc)})
                    write_state(out, {**base_state, "status": "diverged", "epoch": epoch, "error": str(exc),
                                      "last_good_epoch": epoch - 1, "best_val": best_val, "best_epoch": best_epoch})
                raise

            val = row["val_loss"]
            improved = val is not None and (best_val is None or val < best_val - s.min_delta)
            if improved:
                best_val, best_epoch, bad_epochs = val, epoch, 0
            elif val is not None:
                bad_epochs += 1
            if main:  # every rank holds the same weights; rank 0 writes them
                ckpt = make_checkpoint(
                    model, name, optimizers=raw_optimizers, epoch=epoch, best_val=best_val,
                    best_epoch=best_epoch, bad_epochs=bad_epochs,
                    extra={"scaler": scaler.state_dict() if scaler is not None else None,
                           "train_settings": s, "world_size": dist.world_size},
                )
                if improved:
                    save_checkpoint(ckpt, best_path)
                row.update({"best_val": best_val, "is_best": improved,
                            **{f"lr_{k}": float(opt.param_groups[0]["lr"]) for k, opt in raw_optimizers.items()}})
                history.append(row)
                save_checkpoint(ckpt, last_path)
            if s.patience is not None and bad_epochs >= s.patience:
                status = "early_stopped"
                break
            if getattr(model, "training_complete", False):  # all phases done: more epochs change nothing
                break
    done_epoch = epoch if status != "already_done" else start - 1
    if main:
        write_state(out, {**base_state, "status": status, "epoch": done_epoch, "best_val": best_val, "best_epoch": best_epoch})
    dist.barrier()  # the files exist before any rank returns their paths
    best = best_path if best_path.is_file() else None
    return TrainResult(checkpoint=best or last_path, last=last_path, best=best, epochs=done_epoch,
                       status=status, best_val=best_val, best_epoch=best_epoch)


# -- one epoch ---------------------------------------------------------------------------------------
def _train_epoch(model, loader, optimizers, scaler, precision, device, augment, epoch, steps, bar, task,
                 dist: DistContext | None = None, *, channels_last: bool = False) -> dict[str, Any]:
    model.train()
    sums: dict[str, float] = {}
    n_samples, n_steps = 0, 0
    started = time.perf_counter()
    for step, batch in enumerate(loader, start=1):
        if step > steps:
            break
        x = _as_input(batch).to(device, non_blocking=True)
        if augment is not None:
            x = augment(x)
        if channels_last:
            x = to_channels_last(x)
        with precision.autocast(device):
            losses = model.train_step(x, optimizers)
        if dist is not None and dist.enabled:  # every rank logs and NaN-checks the same global means
            losses = dist.mean_losses(losses)
        if scaler is not None and any(o.used_scaler for o in optimizers.values()):
            scaler.update()
            for o in optimizers.values():
                o.used_scaler = False
        for key, value in losses.items():
            value = float(value)
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"training diverged: loss {key!r} is {value} at epoch {epoch}, step {step}; the last good "
                    f"checkpoint (epoch {epoch - 1}) is kept - lower the learning rate, set amp = \"none\", "
                    "or check the data for NaNs",
                    epoch=epoch, step=step, loss=key, value=value,
                )
            sums[key] = sums.get(key, 0.0) + value
        n_samples += int(x.shape[0])
        n_steps += 1
        bar.update(task, advance=1, losses="  ".join(f"{k} {v / n_steps:.4g}" for k, v in sums.items()))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    n_samples *= dist.world_size if dist is not None else 1  # equal shards: every rank saw as many
    row: dict[str, Any] = {"epoch": epoch}
    row.update({f"train_{k}": v / max(n_steps, 1) for k, v in sums.items()})
    row.update({"steps": n_steps, "samples": n_samples, "epoch_time_s": elapsed,
                "samples_per_s": n_samples / elapsed if elapsed > 0 else None})
    return row


@torch.no_grad()
def _validate(model, loader, precision, device, epoch, dist: DistContext | None = None, *,
              channels_last: bool = False) -> float | None:
    """Mean per-sample healthy validation loss (None without validation data).

    Under torchrun each rank holds a disjoint shard (possibly empty); sums and counts are added
    over ranks, so the mean weighs every sample once, as in a single process.
    """
    if loader is None:
        return None
    model.eval()
    total, count = 0.0, 0
    for step, batch in enumerate(loader, start=1):
        x = _as_input(batch).to(device, non_blocking=True)
        if channels_last:
            x = to_channels_last(x)
        with precision.autocast(device):
            per_sample = model.validation_loss(x)
        if per_sample.ndim != 1 or per_sample.shape[0] != x.shape[0]:
            raise PluginError(
                f"{type(model).__name__}.validation_loss must return one loss per sample, shape ({x.shape[0]},), got "
                f"{tuple(per_sample.shape)}; reduce over every axis but the batch axis"
            )
        total += float(per_sample.float().sum())
        count += int(per_sample.shape[0])
    if dist is not None and dist.enabled:
        total, count = dist.sum_over_ranks([total, count])
    value = total / max(count, 1)
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"training diverged: healthy validation loss is {value} at epoch {epoch}; the last good "
            f"checkpoint (epoch {epoch - 1}) is kept - lower the learning rate or set amp = \"none\"",
            epoch=epoch, step="validation", loss="val_loss", value=value,
        )
    return value


def _loader_options(s: TrainSettings, device: torch.device) -> dict[str, Any]:
    """DataLoader keywords: pinned memory on CUDA; with workers, persistent workers and prefetch.

    Pinned host memory lets ``.to(device, non_blocking=True)`` overlap the copy with compute;
    persistent workers skip re-forking (and re-opening memory-mapped cache files) every epoch.
    """
    kw: dict[str, Any] = {
        "num_workers": s.num_workers,
        "pin_memory": device.type == "cuda" if s.pin_memory is None else bool(s.pin_memory),
    }
    if s.num_workers > 0:
        kw["persistent_workers"] = True if s.persistent_workers is None else bool(s.persistent_workers)
        if s.prefetch_factor is not None:
            kw["prefetch_factor"] = s.prefetch_factor
    return kw


def _as_input(batch: Any) -> torch.Tensor:
    """The image tensor of a batch: training datasets yield tensors; dicts give their "image"."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping) and "image" in batch:
        return batch["image"]
    raise DataError(
        f"training batches must be image tensors (B, C, *spatial) of healthy samples, got {type(batch).__name__}; "
        "use brats_ad.data.samplers.SliceDataset / PatchDataset"
    )


def _spatial_dims(model: Any, data: Dataset) -> int:
    dims = getattr(getattr(model, "config", None), "spatial_dims", None)
    return int(dims) if dims in (2, 3) else int(_as_input(data[0]).ndim - 1)


# -- resume / training-free ------------------------------------------------------------------------------
def _resume(model, optimizers, scaler, name: str, path: Path) -> dict[str, Any]:
    ckpt = load_checkpoint(path)
    saved, current = ckpt["config"], config_dict(model.config)
    if ckpt["model"] != name or saved != current:
        diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        what = f"model {ckpt['model']!r}" if ckpt["model"] != name else f"config (differs in {', '.join(diff)})"
        raise CheckpointError(
            f"{path} holds a checkpoint of another {what}; use another output dir, or delete it "
            "(or pass resume=False) to start over"
        )
    if set(ckpt["optimizers"]) != set(optimizers):
        raise CheckpointError(f"{path}: optimisers {sorted(ckpt['optimizers'])} saved, model has {sorted(optimizers)}; start over")
    model.load_state_dict(ckpt["state_dict"])
    for key, opt in optimizers.items():
        opt.load_state_dict(ckpt["optimizers"][key])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return ckpt


def _fit_training_free(model, train_data, name, out, s, device, history, dist: DistContext) -> TrainResult:
    """No optimisation: fit statistics if the model has ``fit(batches)``, then save the checkpoint.

    Under torchrun every rank fits the same statistics (cheap) and rank 0 writes them.
    """
    fit_stats = getattr(model, "fit", None)
    if callable(fit_stats) and train_data is not None and len(train_data) > 0:
        loader = DataLoader(train_data, batch_size=s.batch_size, shuffle=False, num_workers=s.num_workers,
                            worker_init_fn=worker_init_fn)
        with torch.no_grad():
            fit_stats(_as_input(b).to(device) for b in loader)
    path = out / LAST
    if dist.is_main:
        history.reset()
        save_checkpoint(make_checkpoint(model, name, epoch=0), path)
        (out / BEST).unlink(missing_ok=True)
        write_state(out, {"model": name, "status": "no_training", "epoch": 0, "device": str(device)})
    dist.barrier()
    return TrainResult(checkpoint=path, last=path, best=None, epochs=0, status="no_training",
                       best_val=None, best_epoch=None)
