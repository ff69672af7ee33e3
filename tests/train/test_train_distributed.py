"""Training under torchrun: two real gloo processes on CPU against one process.

The equivalence tests run this file as the torchrun worker script (``__main__`` below): two
ranks each see half of every global batch, and the weights must equal those of one process
trained on the whole batch -- which holds only if gradients are averaged (not summed, not left
local) and every rank starts from rank 0's weights.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from brats_ad.errors import ConfigError
from brats_ad.models.output import ModelOutput
from brats_ad.train.config import TrainSettings
from brats_ad.train.distributed import DistContext, env_world, session

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SGD_SETTINGS = dict(epochs=3, batch_size=8, device="cpu", patience=None)


# -- a two-optimiser model with GANomaly's backward pattern (no BatchNorm: exact equivalence) ----------
@dataclass(frozen=True)
class PairConfig:
    spatial_dims: int = 2
    lr: float = 0.1


class PairToy(nn.Module):
    """A "generator" and a "discriminator", each with its own SGD and ``backward(inputs=...)``."""

    trainable = True

    def __init__(self, config: PairConfig) -> None:
        super().__init__()
        self.config = config
        self.g = nn.Conv2d(1, 2, 3, padding=1)
        self.d = nn.Conv2d(2, 1, 3, padding=1)

    def configure_optimizers(self):
        return {"g": torch.optim.SGD(self.g.parameters(), lr=self.config.lr),
                "d": torch.optim.SGD(self.d.parameters(), lr=self.config.lr)}

    def train_step(self, x, optimizers):
        y = self.g(x)
        loss_g = ((self.d(y) - x) ** 2).mean()
        optimizers["g"].zero_grad()
        torch.autograd.backward(loss_g, inputs=list(self.g.parameters()))
        optimizers["g"].step()
        loss_d = (self.d(y.detach()) ** 2).mean() + ((self.d(torch.cat([x, x], 1)) - x) ** 2).mean()
        optimizers["d"].zero_grad()
        torch.autograd.backward(loss_d, inputs=list(self.d.parameters()))
        optimizers["d"].step()
        return {"loss_g": loss_g.item(), "loss_d": loss_d.item()}

    def validation_loss(self, x):
        return ((self.d(self.g(x)) - x) ** 2).flatten(1).mean(1)

    def infer(self, x):
        return ModelOutput(x=x, reconstruction=self.d(self.g(x)))


def _models():
    from _train_models import TinyAE, TinyAEConfig  # tests/train is on sys.path (pytest, or as a script)

    return {"tiny": lambda: TinyAE(TinyAEConfig(optimizer="sgd", lr=0.1)), "pair": lambda: PairToy(PairConfig())}


def _data():
    from _train_models import TensorSet

    # 8 training samples = one global batch per epoch: 4 per rank under torchrun; 5 validation
    # samples split 3 + 2 over the ranks
    return TensorSet(8, (1, 8, 8), seed=1), TensorSet(5, (1, 8, 8), seed=2)


def _train(kind: str, out: Path, epochs: int, init_seed: int):
    from brats_ad.train.loop import fit

    torch.manual_seed(init_seed)
    model = _models()[kind]()
    train, val = _data()
    result = fit(model, train, val, out, name=kind, settings=TrainSettings(**{**SGD_SETTINGS, "epochs": epochs}),
                 progress=False)
    return model, result


def _worker(out: Path) -> None:
    """Run by each torchrun process."""
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    with session("cpu") as dist:  # one group for all fits below; fit joins it
        for kind in ("tiny", "pair"):
            # ranks build different initial weights: fit must start every rank from rank 0's
            model, result = _train(kind, out / kind, epochs=3, init_seed=rank)
            torch.save(model.state_dict(), out / f"{kind}_rank{rank}.pt")
        # resume on every rank from rank 0's last.pt, one more epoch
        model, result = _train("tiny", out / "tiny", epochs=4, init_seed=100 + rank)
        torch.save(model.state_dict(), out / f"tiny4_rank{rank}.pt")
        # a gradient present on one rank only is averaged with zeros; absent everywhere stays None
        from brats_ad.train.distributed import average_gradients

        a, b, c = (torch.zeros(2, requires_grad=True) for _ in range(3))
        a.grad = torch.full((2,), 2.0 * (rank + 1))
        if rank == 0:
            b.grad = torch.full((2,), 4.0)
        average_gradients([a, b, c], dist.world_size, torch.device("cpu"))
        (out / f"grads_rank{rank}.json").write_text(json.dumps(
            {"a": a.grad.tolist(), "b": b.grad.tolist(), "c": c.grad is None}))


# -- launching ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", BRATS_AD_DISABLE_PLUGIN_AUTOLOAD="1",
               PYTHONPATH=os.pathsep.join([str(REPO), str(HERE), env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _history(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "history.jsonl").read_text().splitlines()]


@pytest.fixture(autouse=True)
def _no_torchrun_env(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)


@pytest.mark.slow
def test_two_ranks_on_half_batches_equal_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    dist_out = tmp_path / "torchrun"
    _torchrun([str(Path(__file__).resolve()), str(dist_out)], cwd=tmp_path)

    for kind, epochs in (("tiny", 3), ("pair", 3), ("tiny4", 4)):
        ref_model, _ = _train(kind.rstrip("4"), tmp_path / f"single_{kind}", epochs=epochs, init_seed=0)
        ref = ref_model.state_dict()
        ranks = [torch.load(dist_out / f"{kind}_rank{r}.pt", weights_only=True) for r in (0, 1)]
        assert _max_diff(ranks[0], ref) < 1e-6, kind
        assert _max_diff(ranks[1], ref) < 1e-6, kind
    # the summed losses and the split validation weigh every sample once, as in one process
    for kind in ("tiny", "pair"):
        single = _history(tmp_path / (f"single_{kind}4" if kind == "tiny" else f"single_{kind}"))
        multi = _history(dist_out / kind)
        assert [r["epoch"] for r in multi] == [r["epoch"] for r in single]
        for a, b in zip(multi, single):
            assert a["samples"] == b["samples"] == 8
            for key in b:
                if key.startswith(("train_", "val_loss")):
                    assert a[key] == pytest.approx(b[key], abs=1e-6), (kind, key)
        ckpt = torch.load(dist_out / kind / "last.pt", weights_only=True)
        assert ckpt["world_size"] == 2 and not any(k.startswith("module.") for k in ckpt["state_dict"])
    grads = [json.loads((dist_out / f"grads_rank{r}.json").read_text()) for r in (0, 1)]
    assert grads[0] == grads[1] == {"a": [3.0, 3.0], "b": [2.0, 2.0], "c": True}


def _write_train_config(tmp_path: Path) -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location("_dist_data_factories", HERE.parent / "data" / "_data_factories.py")
    factories = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factories)
    data = tmp_path / "raw"
    for i in range(5):
        factories.write_brats_case(data, f"BraTS2021_{i:05d}", shape=(24, 24, 16), modalities=("flair",), rng=i)
    path = tmp_path / "train.toml"
    path.write_text(f"""
[data]
dataset = "brats"
data_dir = "{data.as_posix()}"
cache_dir = "{(tmp_path / 'cache').as_posix()}"
pipeline = [{{name = "orient"}}, {{name = "percentile-scale"}}, {{name = "crop-pad", shape = [16, 16, 16], margin = 0}}]
modalities = ["flair"]
dims = 2
slice_size = 16
val = 1
test = 1

[model]
name = "ganomaly"
params = {{ width = 4, latent_size = 4, initial_padding = 1 }}

[train]
epochs = 2
batch_size = 4
steps_per_epoch = 3
device = "cpu"
patience = 0

[output]
dir = "{(tmp_path / 'run').as_posix()}"
""")
    return path


@pytest.mark.slow
def test_torchrun_brats_ad_train_writes_one_set_of_files(tmp_path: Path) -> None:
    from brats_ad.train.checkpoint import load_checkpoint, load_model

    config = _write_train_config(tmp_path)
    _torchrun(["-m", "brats_ad", "train", "--config", str(config), "--quiet"], cwd=tmp_path)

    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        "best.pt", "history.csv", "history.jsonl", "last.pt", "split.json", "state.json", "train_config.json"]
    rows = _history(run)
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["steps"] == 3 for r in rows)
    assert json.loads((run / "state.json").read_text())["status"] == "finished"
    ckpt = load_checkpoint(run / "best.pt")
    assert set(ckpt["optimizers"]) == {"generator", "discriminator"} and ckpt["world_size"] == 2
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    model = load_model(run / "best.pt")  # weights_only=True, the registry rebuilds GANomaly
    assert model.infer(torch.zeros(2, 1, 16, 16)).reconstruction.shape == (2, 1, 16, 16)


# -- the single-process side (fast) -----------------------------------------------------------------------
def test_without_torchrun_variables_training_is_single_process() -> None:
    assert env_world() is None
    with session("cpu") as ctx:
        assert not ctx.enabled and ctx.is_main and ctx.seed_salt == ()
        assert ctx.per_rank_batch(6) == 6 and ctx.train_sampler([1, 2], 0) is None
        assert ctx.broadcast_flag(True) and ctx.mean_losses({"b": 1, "a": 2}) == {"b": 1.0, "a": 2.0}


def test_torchrun_variables_are_read_and_checked(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_world() == (4, 3, 1)
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match=r"RANK='x' is not an integer"):
        env_world()
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match=r"inconsistent"):
        env_world()


def test_global_batch_must_split_evenly_over_ranks() -> None:
    ctx = DistContext(world_size=4, rank=1)
    assert ctx.per_rank_batch(32) == 8 and ctx.seed_salt == (1001,) and not ctx.is_main
    with pytest.raises(ConfigError, match=r"batch_size = 30 is the global batch .* 4 torchrun processes; use 28 or 32"):
        ctx.per_rank_batch(30)
    assert list(ctx.shard(list(range(10)))) == [1, 5, 9]


if __name__ == "__main__":  # the torchrun worker of the equivalence test
    _worker(Path(sys.argv[1]))
