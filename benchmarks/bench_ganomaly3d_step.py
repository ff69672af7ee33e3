"""3D GANomaly training step: layout / precision / compile options against the fp32 eager step.

Reference (measured in the same run, steps interleaved): the same 3D model's plain fp32,
eager, default-layout ``Ganomaly.train_step`` -- what a user gets with every option off. Each
option row gives ms/step, patches/s and the speed-up over that reference. A second reference
puts the 3D cost in context: the 2D step of the same width on 128^2 slices, compared per voxel
(ns per input voxel; a 3D model does more work per voxel, because its kernels are 27-tap
instead of 9-tap, so expect a ratio above 1).

Options: ``channels_last_3d`` (always), ``bf16`` autocast (CUDA only unless ``--bf16-cpu``: CPU
autocast is slower for these convolutions), ``compile`` (``--compile``; compiles the networks as
the training loop does, and excludes compile time from the figures).

    python benchmarks/bench_ganomaly3d_step.py                               # 64^3, batch 8, width 64
    python benchmarks/bench_ganomaly3d_step.py --size 32 --batch 2 --width 16 --steps 3   # small CPU run
    python benchmarks/bench_ganomaly3d_step.py --device cuda --compile --steps 20
"""

from __future__ import annotations

import argparse
import contextlib
import copy

import torch

from _timing import interleaved, machine, median, setup_torch, table
from brats_ad.models.ganomaly import Ganomaly, GanomalyConfig
from brats_ad.train.gpu import compile_submodules, to_channels_last


def _variant(base: Ganomaly, device: torch.device, *, channels_last: bool, bf16: bool, compile_: bool, x: torch.Tensor):
    model = copy.deepcopy(base).to(device)
    dims = model.config.spatial_dims
    if channels_last:
        to_channels_last(model, dims)
        x = to_channels_last(x)
    opts = model.configure_optimizers()
    if compile_:
        compile_submodules(model, device=device)
    autocast = (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step() -> None:
        with autocast():
            model.train_step(x, opts)

    return step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64, help="patch edge (power of 2, >= 32)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--latent", type=int, default=100)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true", help="add a torch.compile row")
    p.add_argument("--bf16-cpu", action="store_true", help="add bf16 rows on CPU too")
    p.add_argument("--no-2d", action="store_true", help="skip the 2D per-voxel reference")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)

    device = setup_torch(args.device, args.threads)
    cfg3 = GanomalyConfig(3, in_channels=args.channels, image_size=args.size, latent_size=args.latent, width=args.width)
    base = Ganomaly(cfg3)
    x3 = torch.rand(args.batch, args.channels, *(args.size,) * 3, device=device) * 2 - 1
    bf16 = device.type == "cuda" or args.bf16_cpu

    variants = {"fp32 eager (reference)": dict(channels_last=False, bf16=False, compile_=False),
                "channels_last_3d": dict(channels_last=True, bf16=False, compile_=False)}
    if bf16:
        variants["bf16"] = dict(channels_last=False, bf16=True, compile_=False)
        variants["bf16 + channels_last_3d"] = dict(channels_last=True, bf16=True, compile_=False)
    if args.compile:
        variants["bf16 + channels_last_3d + compile" if bf16 else "compile"] = dict(
            channels_last=bf16, bf16=bf16, compile_=True)
    steps = {name: _variant(base, device, x=x3, **kw) for name, kw in variants.items()}
    if not args.no_2d:
        cfg2 = GanomalyConfig(2, in_channels=args.channels, image_size=128, latent_size=args.latent, width=args.width)
        x2 = torch.rand(args.batch, args.channels, 128, 128, device=device) * 2 - 1
        steps["2D 128^2 fp32 eager (per-voxel ref.)"] = _variant(Ganomaly(cfg2), device, x=x2, channels_last=False,
                                                              bf16=False, compile_=False)
    # compile happens on the first calls: warm up at least twice so it is never timed
    warmup = max(args.warmup, 2 if args.compile else args.warmup)
    times = interleaved(steps, device, warmup=warmup, repeats=args.steps)

    ref = median(times["fp32 eager (reference)"])
    vox3 = args.batch * args.size**3
    rows = []
    for name, t in times.items():
        ms = median(t)
        is2d = name.startswith("2D")
        vox = args.batch * 128 * 128 if is2d else vox3
        rows.append([name, ms * 1e3, args.batch / ms, 1e9 * ms / vox, "-" if is2d else ref / ms])
    params = sum(q.numel() for q in base.parameters())
    print(f"3D GANomaly train step: batch {args.batch} x {args.channels} x {args.size}^3, width {args.width}, "
          f"latent {args.latent}, {params / 1e6:.1f}M params, device {device}; median of {args.steps} "
          f"interleaved steps after {warmup} warm-up")
    print(f"machine: {machine()}")
    print(table(["variant", "ms/step", "samples/s", "ns/voxel", "x vs fp32 eager"], rows))
    if not args.no_2d:
        r2 = median(times["2D 128^2 fp32 eager (per-voxel ref.)"]) / (args.batch * 128 * 128)
        print(f"3D cost per voxel / 2D cost per voxel (both fp32 eager): {ref / vox3 / r2:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
