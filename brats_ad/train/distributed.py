"""Multi-process training under ``torchrun``: process group, one device per rank, gradient averaging.

``torchrun --nproc_per_node N -m brats_ad train --config FILE`` starts N copies of the command;
torchrun gives each ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
:func:`session` reads them, starts the process group (NCCL on CUDA, gloo on CPU) and puts rank
``r`` of a node on ``cuda:LOCAL_RANK``. Without those variables (or with ``WORLD_SIZE=1``) it
changes nothing: single-process training is the same code path with a 1-rank context.

Gradients are averaged in the optimiser wrapper the loop already hands to ``train_step``
(:class:`~brats_ad.train.device.LoopOptimizer`): just before each ``step()`` (or ``unscale()``)
the optimiser's gradients are all-reduced and divided by the world size. That is the arithmetic
of ``DistributedDataParallel`` (sum all-reduce / world size, in buckets); we do not wrap the
networks in DDP because models own their optimisers and backward passes, and the built-ins use
patterns DDP's reducer rejects or mis-syncs: GANomaly runs its discriminator twice per step and
backpropagates with ``inputs=`` (a parameter becomes "ready" twice), f-AnoGAN's gradient penalty
is a double backward through ``autograd.grad(create_graph=True)``. Syncing at ``step()`` is
correct for any number of optimisers, any backward pattern and gradient accumulation; the price
is that communication does not overlap the backward pass (small for these model sizes).

Parameters and buffers are broadcast from rank 0 at the start (identical initial weights even if
ranks seeded differently) and after every epoch (so BatchNorm running statistics, like DDP's
``broadcast_buffers``, and anything a model changes outside gradients, are rank 0's before
validation and checkpointing). BatchNorm normalises with per-rank batch statistics in training,
as under DDP without ``SyncBatchNorm``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Subset

from brats_ad.errors import ConfigError
from brats_ad.train.device import select_device

#: Gradient bucket size for the all-reduce (DDP's default ``bucket_cap_mb``).
BUCKET_BYTES = 25 * 1024 * 1024
#: Added to the per-epoch seed salt so each rank draws its own dropout / augmentation / noise.
_RANK_SALT = 1000


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run. ``world_size == 1``: single-process, every method a no-op."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and state files; it alone shows progress."""
        return self.rank == 0

    @property
    def seed_salt(self) -> tuple[int, ...]:
        """Extra salt for per-epoch seeds: ``()`` single-process (unchanged seeds), else per rank."""
        return (_RANK_SALT + self.rank,) if self.enabled else ()

    # -- the batch and the data each rank sees --------------------------------------------------------
    def per_rank_batch(self, batch_size: int) -> int:
        """``train.batch_size`` is the global batch (same optimisation as one process); split it."""
        if batch_size % self.world_size:
            lower = max(self.world_size, batch_size - batch_size % self.world_size)
            raise ConfigError(
                f"train.batch_size = {batch_size} is the global batch and must split evenly over the "
                f"{self.world_size} torchrun processes; use {lower} or {lower + self.world_size}"
            )
        return batch_size // self.world_size

    def train_sampler(self, data: Dataset, seed: int) -> DistributedSampler | None:
        """Each rank a disjoint 1/N of a per-epoch shuffle (padded to equal length: equal step counts)."""
        if not self.enabled:
            return None
        return DistributedSampler(data, num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=seed)

    def shard(self, data: Dataset) -> Dataset:
        """Every N-th sample from this rank's offset, no padding (validation counts each sample once)."""
        if not self.enabled:
            return data
        return Subset(data, range(self.rank, len(data), self.world_size))

    # -- collectives (no-ops in a single process) -----------------------------------------------------
    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. prepares the cache, writes split.json); the others after."""
        if self.enabled and not self.is_main:
            dist.barrier()
        yield
        if self.enabled and self.is_main:
            dist.barrier()

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (decisions that read the filesystem must agree)."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)], device=self._comm_device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers into every rank's ``module``, in place."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def sum_over_ranks(self, values: Sequence[float]) -> list[float]:
        if not self.enabled:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def mean_losses(self, losses: Mapping[str, Any]) -> dict[str, float]:
        """The step's losses averaged over ranks (every rank then logs and NaN-checks the same values).

        Keys are sorted so each rank sends its values in the same order; models return the same
        keys on every rank because every rank runs the same code on the same step.
        """
        if not self.enabled:
            return {k: float(v) for k, v in losses.items()}
        keys = sorted(losses)
        total = dict(zip(keys, self.sum_over_ranks([float(losses[k]) for k in keys])))
        return {k: total[k] / self.world_size for k in losses}  # the model's order, for the log

    def grad_sync(self, optimizer: torch.optim.Optimizer) -> None:
        """Average the gradients of ``optimizer``'s parameters over ranks (what DDP's reducer computes)."""
        if self.enabled:
            average_gradients(_params_of(optimizer), self.world_size, self._comm_device)

    @property
    def _comm_device(self) -> torch.device:
        """NCCL exchanges CUDA tensors, gloo CPU tensors."""
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def _params_of(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    seen: set[int] = set()
    params = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def average_gradients(params: Sequence[torch.Tensor], world_size: int, comm_device: torch.device) -> None:
    """All-reduce-average ``p.grad`` of ``params`` in place, flattened into ~25 MiB buckets.

    A parameter without a gradient on some ranks but not others (a branch one rank skipped) is
    averaged with zeros there, as DDP does with unused parameters; one that has no gradient on
    any rank keeps ``grad = None`` so the optimiser still skips it.
    """
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=comm_device)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    grads: list[torch.Tensor] = []
    for p, flag in zip(params, has.tolist()):
        if not flag:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        if p.grad.is_sparse:
            raise ConfigError("sparse gradients cannot be averaged across torchrun processes; use dense layers")
        grads.append(p.grad)
    for bucket in _buckets(grads):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world_size)
        offset = 0
        for g in bucket:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def _buckets(grads: Sequence[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Consecutive runs of same dtype/device gradients, each at most ~BUCKET_BYTES (one if larger)."""
    bucket: list[torch.Tensor] = []
    size = 0
    for g in grads:
        nbytes = g.numel() * g.element_size()
        if bucket and (size + nbytes > BUCKET_BYTES or g.dtype != bucket[0].dtype or g.device != bucket[0].device):
            yield bucket
            bucket, size = [], 0
        bucket.append(g)
        size += nbytes
    if bucket:
        yield bucket


# -- starting and finding the process group -----------------------------------------------------------
def env_world() -> tuple[int, int, int] | None:
    """``(world_size, rank, local_rank)`` from torchrun's variables, or None when not under torchrun."""
    if "WORLD_SIZE" not in os.environ:
        return None
    values = []
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        raw = os.environ.get(key, "0" if key == "LOCAL_RANK" else None)
        try:
            values.append(int(raw))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigError(
                f"environment variable {key}={raw!r} is not an integer (WORLD_SIZE is set, so a torchrun "
                "launch is assumed); start with 'torchrun --nproc_per_node N -m brats_ad train ...' or unset WORLD_SIZE"
            ) from None
    world, rank, local = values
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"torchrun variables WORLD_SIZE={world}, RANK={rank}, LOCAL_RANK={local} are inconsistent; "
                          "launch through torchrun rather than setting them by hand")
    return world, rank, local


def rank_device(spec: str, local_rank: int) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` where the config asks for CUDA (or auto finds it)."""
    device = select_device(spec)  # validates the spec and CUDA availability
    if device.type != "cuda":
        return device
    if isinstance(spec, str) and ":" in spec:
        raise ConfigError(
            f"train.device = {spec!r} pins one GPU, but under torchrun every process needs its own; "
            "use device = \"cuda\" or \"auto\" (process LOCAL_RANK takes cuda:LOCAL_RANK)"
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(
            f"torchrun process LOCAL_RANK={local_rank} needs cuda:{local_rank}, but this node has {count} "
            f"GPU(s); start at most --nproc_per_node {count}"
        )
    return torch.device("cuda", local_rank)


@contextlib.contextmanager
def session(device_spec: str = "auto") -> Iterator[DistContext]:
    """The distributed context for one training run; starts (and then ends) the process group.

    Re-entrant: inside an existing group (``train_from_config`` -> ``fit``, or a user's own
    ``init_process_group``) it joins that group and leaves it running. Outside torchrun it yields
    a single-process context on :func:`~brats_ad.train.device.select_device`'s device.
    """
    if dist.is_available() and dist.is_initialized():
        env = env_world()
        local = env[2] if env else dist.get_rank() % max(torch.cuda.device_count(), 1)
        world, rank = dist.get_world_size(), dist.get_rank()
        device = rank_device(device_spec, local) if world > 1 else select_device(device_spec)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        yield DistContext(world, rank, local, device)
        return
    env = env_world()
    if env is None or env[0] == 1:
        yield DistContext(device=select_device(device_spec))
        return
    if not dist.is_available():
        raise ConfigError(f"torch {torch.__version__} was built without torch.distributed; "
                          "install a standard torch build to train with torchrun")
    world, rank, local = env
    device = rank_device(device_spec, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # device_id (torch >= 2.3) binds the communicator to this rank's GPU at once
        bind = {"device_id": device} if "device_id" in inspect.signature(dist.init_process_group).parameters else {}
        dist.init_process_group("nccl", **bind)
    else:
        dist.init_process_group("gloo")
    try:
        yield DistContext(world, rank, local, device)
    finally:
        dist.destroy_process_group()
