"""The steps of benchmarks/gpu_check.sh: one GPU's throughput, busy fraction and a real short run.

Each step is one process (``--step NAME``) that the shell script runs under its own timeout
and that writes ``OUTDIR/<step>.json`` after every measurement, so a step killed half-way still
leaves what it measured. ``--step report`` turns the JSON files into ``OUTDIR/summary.md``.

Steps (in order; budget seconds in gpu_check.sh):

* ``env``        torch / CUDA / GPU facts; exits 2 without CUDA (the script then stops).
* ``throughput`` training and scoring samples/s per model (ganomaly, ae, vae, f-anogan) and dim
                 (2D 128^2 batch 64, 3D 64^3 batch 8; 4 channels), bf16 + channels-last, batches
                 from a DataLoader with pinned memory and worker processes.
* ``ganomaly2d`` GANomaly 2D 128^2 (1 channel, batch 64, width 64, latent 100 -- the paper's
                 configuration): fp32 eager (reference) vs bf16 + channels-last (+ compile), and
                 anomalib's fp32 step when anomalib is importable. Goal: >= 2x anomalib fp32.
* ``data``       synthetic BraTS-layout cases generated and prepared into a cache (1 mm, 192^2 x 160).
* ``busy``       steady GANomaly 2D training from that cache (SliceDataset -> workers -> pinned
                 memory -> GPU), GPU busy fraction sampled meanwhile. Goal: >= 90 %.
* ``train``      ``brats-ad train`` on the cache (2 short epochs), then every test volume scored;
                 extrapolates a full BraTS 2021 2D GANomaly train + score.
* ``report``     summary.md from the JSON files.

``--allow-cpu --tiny`` runs every step on CPU at toy sizes (to check this script, not to measure).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from _timing import median, table

# Full BraTS 2021 (1,251 cases) with benchmarks/configs/brats2021.toml's training settings
BRATS2021_CASES = 1251
FULL_TRAIN_SAMPLES = 30 * 500 * 32  # epochs x steps_per_epoch x batch_size (an upper bound: patience may stop earlier)
FULL_VAL_VOLUMES = 125  # healthy-validation slices each epoch come from these cases


class Results:
    """A step's results, rewritten to OUTDIR/<step>.json after every addition."""

    def __init__(self, out: Path, step: str) -> None:
        self.path = out / f"{step}.json"
        self.data: dict[str, Any] = {"step": step, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": [], "notes": []}

    def add(self, **row: Any) -> None:
        self.data["rows"].append(row)
        print(json.dumps(row), flush=True)
        self.save()

    def set(self, **kw: Any) -> None:
        self.data.update(kw)
        self.save()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        print(text, flush=True)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)


# -- helpers -------------------------------------------------------------------------------------------
def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _amp(dev: torch.device, bf16: bool):
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _rate(fn: Callable[[], Any], dev: torch.device, per_call: int, *, seconds: float, warmup: int = 3,
          max_calls: int = 200) -> float:
    """Samples per second of ``fn`` (``per_call`` samples each) over about ``seconds``."""
    for _ in range(warmup):
        fn()
    _sync(dev)
    calls, start = 0, time.perf_counter()
    while calls < max_calls and (calls < 2 or time.perf_counter() - start < seconds):
        fn()
        calls += 1
        if calls % 5 == 0:
            _sync(dev)
    _sync(dev)
    return calls * per_call / (time.perf_counter() - start)


def _build(name: str, dims: int, in_channels: int, size: int, params: dict[str, Any]) -> torch.nn.Module:
    """A registered model with the data-derived parameters filled in (as brats-ad train does)."""
    from brats_ad.plugins import get_registries

    entry = get_registries().models.get(name)
    derived = {"spatial_dims": dims, "in_channels": in_channels, "image_size": size, **params}
    return entry.load()(**entry.resolve_params({k: v for k, v in derived.items() if k in entry.params}))


class _RandomSet(torch.utils.data.Dataset):
    """Random samples made in the worker (stands in for cache reads in the throughput step)."""

    def __init__(self, n: int, shape: tuple[int, ...]) -> None:
        self.n, self.shape = n, shape

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(i)
        return torch.rand(self.shape, generator=g) * 2 - 1


def _loader(ds: Any, batch: int, workers: int, dev: torch.device) -> torch.utils.data.DataLoader:
    kw: dict[str, Any] = {"num_workers": workers, "pin_memory": dev.type == "cuda", "drop_last": True, "shuffle": True}
    if workers:
        kw.update(persistent_workers=True, prefetch_factor=4)
    return torch.utils.data.DataLoader(ds, batch_size=batch, **kw)


def _forever(loader: Any):
    while True:
        yield from loader


# -- steps ---------------------------------------------------------------------------------------------
def step_env(args: argparse.Namespace, res: Results) -> int:
    info: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
                            "cpus": os.cpu_count(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda_version=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported(),
                    device_count=torch.cuda.device_count())
    import importlib.util

    info["pynvml"] = importlib.util.find_spec("pynvml") is not None
    try:
        import anomalib

        info["anomalib"] = anomalib.__version__
    except Exception:  # noqa: BLE001
        info["anomalib"] = None
    from brats_ad.train.gpu import BusySampler, compile_available

    info["busy_reader"] = BusySampler().source
    info["compile"] = compile_available("cuda" if torch.cuda.is_available() else "cpu", probe=False)
    res.set(env=info)
    print(json.dumps(info, indent=1))
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_check: no CUDA device visible to torch -- this script measures a GPU; nothing to do", flush=True)
        return 2
    return 0


def step_throughput(args: argparse.Namespace, res: Results) -> int:
    dev = args.device
    models = {"ganomaly": {}, "ae": {}, "vae": {}, "f-anogan": {}}
    shapes = {2: (128, 64), 3: (64, 8)} if not args.tiny else {2: (32, 4), 3: (32, 2)}
    channels = 4
    bf16 = dev.type == "cuda"
    for dims in (2, 3):
        size, batch = shapes[dims]
        loader = _loader(_RandomSet(batch * 64, (channels,) + (size,) * dims), batch, args.workers, dev)
        batches = _forever(loader)
        for name, params in models.items():
            if args.tiny and name in ("ae", "vae"):
                params = {**params, "channels": (4, 8), "strides": (2, 2)}
            if args.tiny and name in ("ganomaly", "f-anogan"):
                params = {**params, "width": 8}
            try:
                torch.manual_seed(0)
                model = _build(name, dims, channels, size, params).to(dev)
                from brats_ad.train.gpu import to_channels_last
                from brats_ad.train.device import LoopOptimizer

                to_channels_last(model, dims)
                opts = {k: LoopOptimizer(o, None, k) for k, o in model.configure_optimizers().items()}

                def train() -> None:
                    x = to_channels_last(next(batches).to(dev, non_blocking=True))
                    with _amp(dev, bf16):
                        model.train_step(x, opts)

                train_rate = _rate(train, dev, batch, seconds=args.seconds)
                x_fixed = to_channels_last(next(batches).to(dev))

                def score() -> None:
                    with torch.inference_mode(), _amp(dev, bf16):
                        model.infer(x_fixed)

                model.eval()
                score_rate = _rate(score, dev, batch, seconds=args.seconds / 2)
                res.add(model=name, dims=dims, size=size, batch=batch, channels=channels,
                        precision="bf16" if bf16 else "fp32", channels_last=True, workers=args.workers,
                        train_samples_per_s=round(train_rate, 1), score_samples_per_s=round(score_rate, 1),
                        peak_mem_gib=round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None)
            except Exception as exc:  # noqa: BLE001 -- one failing model must not hide the others
                res.add(model=name, dims=dims, error=f"{type(exc).__name__}: {exc}"[:300])
            finally:
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(dev)
    return 0


def step_ganomaly2d(args: argparse.Namespace, res: Results) -> int:
    import copy

    from bench_ganomaly_step import _anomalib
    from brats_ad.models.ganomaly import Ganomaly, GanomalyConfig
    from brats_ad.train.gpu import compile_submodules, to_channels_last

    dev = args.device
    size, batch, width, latent = (128, 64, 64, 100) if not args.tiny else (32, 4, 8, 16)
    cfg = GanomalyConfig(2, in_channels=1, image_size=size, latent_size=latent, width=width)
    torch.manual_seed(0)
    base = Ganomaly(cfg)
    x = torch.rand(batch, 1, size, size, device=dev) * 2 - 1
    bf16 = dev.type == "cuda"
    res.set(config=dict(size=size, batch=batch, width=width, latent=latent, channels=1))

    def ours(cl: bool, half: bool, comp: bool) -> Callable[[], None]:
        model = copy.deepcopy(base).to(dev)
        xx = x
        if cl:
            to_channels_last(model, 2)
            xx = to_channels_last(x)
        opts = model.configure_optimizers()
        if comp:
            compile_submodules(model, device=dev)

        def step() -> None:
            with _amp(dev, half):
                model.train_step(xx, opts)

        return step

    variants: list[tuple[str, Callable[[], Callable[[], None]]]] = [
        ("brats-ad fp32 eager (reference)", lambda: ours(False, False, False)),
        ("brats-ad bf16 + channels_last" if bf16 else "brats-ad channels_last", lambda: ours(True, bf16, False)),
    ]
    theirs = _anomalib(cfg, base, dev, False, False)
    if theirs is not None:
        variants.append(("anomalib fp32 eager", lambda: theirs))
    else:
        res.note("anomalib not importable: no anomalib row (pip install anomalib to add it)")
    if not args.no_compile:
        variants.append(("brats-ad bf16 + channels_last + compile" if bf16 else "brats-ad compile",
                         lambda: ours(True, bf16, True)))
    rates: dict[str, float] = {}
    for name, make in variants:  # compile last: if it overruns the step timeout the rest is saved
        try:
            t0 = time.perf_counter()
            fn = make()
            fn()  # first call: cuDNN autotuning / compilation
            _sync(dev)
            first = time.perf_counter() - t0
            rate = _rate(fn, dev, batch, seconds=args.seconds, warmup=3 if "compile" in name else 2)
            rates[name] = rate
            ref = rates.get("brats-ad fp32 eager (reference)")
            anom = rates.get("anomalib fp32 eager")
            res.add(variant=name, samples_per_s=round(rate, 1), ms_per_step=round(1e3 * batch / rate, 2),
                    first_call_s=round(first, 1), x_vs_fp32_eager=round(rate / ref, 2) if ref else None,
                    x_vs_anomalib_fp32=round(rate / anom, 2) if anom else None)
        except Exception as exc:  # noqa: BLE001
            res.add(variant=name, error=f"{type(exc).__name__}: {exc}"[:300])
    return 0


def _train_toml(args: argparse.Namespace, cache_dir: Path, out: Path, *, epochs: int, steps: int) -> Path:
    size, batch, width, latent = (128, 64, 64, 100) if not args.tiny else (32, 4, 8, 16)
    dev = "cuda" if args.device.type == "cuda" else "cpu"
    text = f"""
[data]
cache_dir = "{cache_dir}"
modalities = ["flair"]
dims = 2
slice_size = {size}
val = 1
test = 1
split_file = "{out / 'split.json'}"

[model]
name = "ganomaly"
params = {{ width = {width}, latent_size = {latent} }}

[train]
epochs = {epochs}
batch_size = {batch}
num_workers = {args.workers}
device = "{dev}"
amp = "{'bf16' if dev == 'cuda' else 'none'}"
channels_last = {'true' if dev == 'cuda' else 'false'}
patience = 0
steps_per_epoch = {steps}

[output]
dir = "{out}"
"""
    path = out.parent / f"{out.name}.toml"
    out.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def step_data(args: argparse.Namespace, res: Results) -> int:
    from brats_ad.data.prepare import prepare_dataset, resolve_pipeline
    from brats_ad.data.synthetic import SyntheticDataset

    root = args.out / "work" / "synthetic"
    n = 6 if not args.tiny else 3
    t0 = time.perf_counter()
    ds = SyntheticDataset(root, cases=n, seed=0, healthy_fraction=0.0, progress=False)
    cases = ds.cases()
    gen = time.perf_counter() - t0
    res.add(what="synthetic cases generated", cases=len(cases), seconds=round(gen, 1))
    t0 = time.perf_counter()
    summary = prepare_dataset(cases, resolve_pipeline("brats", "synthetic"), args.out / "work" / "cache",
                              modalities=("flair",), workers=min(8, os.cpu_count() or 1), progress=False)
    res.add(what="prepared into cache (brats pipeline, 1 mm, 192x192x160)", cases=len(cases),
            seconds=round(time.perf_counter() - t0, 1))
    res.set(cache_dir=str(summary.cache_dir))
    return 0


def _cache_dir(args: argparse.Namespace) -> Path:
    data = json.loads((args.out / "data.json").read_text())
    if "cache_dir" not in data:
        raise SystemExit("the data step did not finish (no cache_dir in data.json); rerun gpu_check.sh")
    return Path(data["cache_dir"])


def step_busy(args: argparse.Namespace, res: Results) -> int:
    from brats_ad.data.cache import cache_index, open_cache
    from brats_ad.data.samplers import SliceDataset
    from brats_ad.models.ganomaly import Ganomaly, GanomalyConfig
    from brats_ad.train.device import LoopOptimizer
    from brats_ad.train.gpu import BusySampler, to_channels_last

    dev = args.device
    size, batch, width, latent = (128, 64, 64, 100) if not args.tiny else (32, 4, 8, 16)
    cache = _cache_dir(args)
    ds = SliceDataset(open_cache(cache, cache_index(cache)), size=size, modalities=("flair",), unlabelled="healthy")
    res.set(dataset_slices=len(ds))
    loader = _loader(ds, batch, args.workers, dev)

    # the loader alone: how many slices/s the workers deliver into pinned memory
    it = _forever(loader)
    data_rate = _rate(lambda: next(it), torch.device("cpu"), batch, seconds=args.seconds / 2, warmup=2)
    res.add(what="data loader alone (workers -> pinned batches)", workers=args.workers,
            samples_per_s=round(data_rate, 1))

    bf16 = dev.type == "cuda"
    model = Ganomaly(GanomalyConfig(2, in_channels=1, image_size=size, latent_size=latent, width=width)).to(dev)
    to_channels_last(model, 2)
    opts = {k: LoopOptimizer(o, None, k) for k, o in model.configure_optimizers().items()}

    def step() -> None:
        x = to_channels_last(next(it).to(dev, non_blocking=True))
        with _amp(dev, bf16):
            model.train_step(x, opts)

    for _ in range(5):  # warm-up: cuDNN autotuning, worker start
        step()
    _sync(dev)
    with BusySampler(dev if dev.type == "cuda" else None, interval=0.1) as busy:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds * 2:
            step()
            n += 1
        _sync(dev)
        elapsed = time.perf_counter() - t0
    res.add(what="GANomaly 2D steady training from the cache", size=size, batch=batch, workers=args.workers,
            precision="bf16" if bf16 else "fp32", channels_last=True, samples_per_s=round(n * batch / elapsed, 1),
            gpu_busy=None if busy.busy is None else round(busy.busy, 3), busy_samples=len(busy.samples),
            busy_reader=busy.source)
    return 0


def step_train(args: argparse.Namespace, res: Results) -> int:
    import numpy as np

    from brats_ad.data.cache import open_cache
    from brats_ad.infer.volume import score_volume
    from brats_ad.scorers.latent import Latent
    from brats_ad.scorers.residual import Residual
    from brats_ad.train.checkpoint import load_model
    from brats_ad.train.run import train_from_config

    dev = args.device
    cache = _cache_dir(args)
    out = args.out / "work" / "train_ganomaly_2d"
    steps = 100 if not args.tiny else 3
    cfg = _train_toml(args, cache, out, epochs=2, steps=steps)
    t0 = time.perf_counter()
    ckpt = train_from_config(cfg, progress=False)
    wall = time.perf_counter() - t0
    import csv

    with open(out / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    rates = [float(r["samples_per_s"]) for r in rows if r.get("samples_per_s")]
    res.add(what="brats-ad train (2 epochs)", steps_per_epoch=steps, wall_s=round(wall, 1),
            samples_per_s_by_epoch=[round(r, 1) for r in rates],
            epoch_time_s=[round(float(r["epoch_time_s"]), 1) for r in rows if r.get("epoch_time_s")])

    split = json.loads((out / "split.json").read_text())
    test_ids = split.get("test") or split.get("splits", {}).get("test") or []
    model = load_model(ckpt, device=dev)
    scorers = {"residual": Residual(), "latent": Latent()}
    size = 128 if not args.tiny else 32
    per_volume = []
    for case in open_cache(cache, test_ids or None)[: max(1, len(test_ids))]:
        image = np.asarray(case.image, dtype=np.float32).transpose(1, 2, 3, 0)
        mask = np.asarray(case.brain_mask).transpose(1, 2, 0)
        for _ in range(2):  # the first call pays cuDNN autotuning: keep the second
            _sync(dev)
            t = time.perf_counter()
            with _amp(dev, dev.type == "cuda"):
                score_volume(model, image, mask, scorers, spatial_dims=2, size=size, batch_size=160, device=dev,
                             min_brain_fraction=0.1, case_id=case.case_id)
            _sync(dev)
            elapsed = time.perf_counter() - t
        per_volume.append(elapsed)
    score_s = median(per_volume)
    res.add(what="2D scoring per volume (residual + latent)", volumes=len(per_volume), s_per_volume=round(score_s, 3))

    steady = max(rates) if rates else float("nan")
    busy_path = args.out / "busy.json"
    if busy_path.is_file():  # the steady figure from the busy step, when it ran
        for row in json.loads(busy_path.read_text()).get("rows", []):
            if row.get("what", "").startswith("GANomaly 2D steady"):
                steady = max(steady, row["samples_per_s"]) if not math.isnan(steady) else row["samples_per_s"]
    train_s = FULL_TRAIN_SAMPLES / steady
    val_s = 30 * FULL_VAL_VOLUMES * score_s  # one healthy-validation pass per epoch, costed as scoring (upper bound)
    score_all_s = BRATS2021_CASES * score_s
    total = train_s + val_s + score_all_s
    res.set(estimate={
        "assumptions": f"{FULL_TRAIN_SAMPLES:,} training samples (brats2021.toml: 30 epochs x 500 steps x 32; "
                       f"no early stop), {steady:.0f} samples/s; validation 30 x {FULL_VAL_VOLUMES} volumes and "
                       f"scoring all {BRATS2021_CASES} volumes at {score_s:.3f} s/volume; cache prepared beforehand",
        "train_min": round(train_s / 60, 1), "validation_min": round(val_s / 60, 1),
        "score_min": round(score_all_s / 60, 1), "total_min": round(total / 60, 1), "goal_min": 30,
    })
    print(json.dumps(res.data["estimate"], indent=1))
    return 0


def step_report(args: argparse.Namespace, res: Results) -> int:
    lines = [f"# gpu_check {time.strftime('%Y-%m-%d %H:%M')}", ""]
    load = lambda s: json.loads((args.out / f"{s}.json").read_text()) if (args.out / f"{s}.json").is_file() else None  # noqa: E731
    env = load("env")
    if env:
        lines += ["## machine", "", "```", json.dumps(env.get("env"), indent=1), "```", ""]
    for step, title in (("throughput", "throughput (bf16 + channels_last, pinned memory, workers)"),
                        ("ganomaly2d", "GANomaly 2D 128^2 step"), ("data", "synthetic data"),
                        ("busy", "steady training from the cache: GPU busy fraction"),
                        ("train", "short real training run + scoring")):
        data = load(step)
        lines += [f"## {title}", ""]
        if data is None:
            lines += ["(step did not run or wrote nothing; see its .log)", ""]
            continue
        rows = data.get("rows", [])
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        if rows:
            lines += ["```", table(keys, [[_cell(r.get(k)) for k in keys] for r in rows]), "```"]
        for note in data.get("notes", []):
            lines.append(f"- {note}")
        if "estimate" in data:
            lines += ["", "Full BraTS 2021 2D GANomaly train + score estimate:", "",
                      "```", json.dumps(data["estimate"], indent=1), "```"]
        lines.append("")
    text = "\n".join(lines)
    (args.out / "summary.md").write_text(text)
    print(text)
    return 0


def _cell(v: Any) -> Any:
    if v is None:
        return "-"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return v


STEPS = {"env": step_env, "throughput": step_throughput, "ganomaly2d": step_ganomaly2d, "data": step_data,
         "busy": step_busy, "train": step_train, "report": step_report}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--step", choices=list(STEPS), required=True)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seconds", type=float, default=4.0, help="timing window per measurement")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--allow-cpu", action="store_true", help="run on CPU (checks the script; figures meaningless)")
    p.add_argument("--tiny", action="store_true", help="toy sizes (with --allow-cpu)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step != "env" and args.step != "report" and not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_check: no CUDA device; pass --allow-cpu to exercise the script on CPU", flush=True)
        return 2
    args.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    res = Results(args.out, args.step)
    try:
        return STEPS[args.step](args, res)
    except Exception as exc:  # noqa: BLE001 -- record why, then fail the step
        res.note(f"step failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
