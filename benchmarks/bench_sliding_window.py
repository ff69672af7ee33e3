"""3D sliding-window scoring of one volume against a bare forward pass over the same windows.

``score_volume`` on a 192 x 192 x 160 volume (the default "brats" cache grid) with a 3D GANomaly
on 64^3 patches: MONAI ``sliding_window_inference``, every scorer per window, Gaussian blending,
background fill. Reference, measured in the same run and interleaved: the same model's
``infer`` on exactly the windows ``score_volume`` ran (same corners, same batch size), cut out
by slicing, with no scorer, no blending and no stitching -- the floor any sliding-window scorer
pays. The ratio is the stitching + scoring overhead (1.0 = free).

    python benchmarks/bench_sliding_window.py                                  # width 64, 4 channels, overlap 0.5
    python benchmarks/bench_sliding_window.py --width 8 --channels 1 --overlap 0.25   # small CPU run
    python benchmarks/bench_sliding_window.py --device cuda --batch 32 --bf16
"""

from __future__ import annotations

import argparse
import contextlib

import numpy as np
import torch

from _timing import interleaved, machine, median, setup_torch, table
from brats_ad.infer.volume import score_volume
from brats_ad.models.ganomaly import Ganomaly, GanomalyConfig
from brats_ad.scorers.latent import Latent
from brats_ad.scorers.residual import Residual


def _volume(channels: int, shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoid "brain" of noise in [-1, 1] on a -1 background, with its mask."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    mask = (grid[0] / 0.8) ** 2 + (grid[1] / 0.9) ** 2 + (grid[2] / 0.85) ** 2 < 1
    image = np.full((channels, *shape), -1.0, dtype=np.float32)
    image[:, mask] = rng.uniform(-0.8, 1.0, size=(channels, int(mask.sum()))).astype(np.float32)
    return image, mask


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[192, 192, 160])
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--latent", type=int, default=100)
    p.add_argument("--batch", type=int, default=4, help="windows per model call")
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)

    device = setup_torch(args.device, args.threads)
    model = Ganomaly(GanomalyConfig(3, in_channels=args.channels, image_size=args.patch, latent_size=args.latent,
                                    width=args.width)).to(device).eval()
    image, mask = _volume(args.channels, tuple(args.shape))
    scorers = {"residual": Residual(), "latent": Latent()}
    amp = (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext

    def scored() -> object:
        with amp():
            return score_volume(model, image, mask, scorers, spatial_dims=3, size=args.patch, batch_size=args.batch,
                                device=device, overlap=args.overlap, blend="gaussian")

    probe = scored()  # the windows score_volume runs: the reference runs the very same ones
    corners = probe.windows
    n = len(corners)
    vol = torch.from_numpy(image)[None].to(device)
    s = args.patch

    def bare() -> None:
        with torch.inference_mode(), amp():
            for start in range(0, n, args.batch):
                batch = torch.cat([vol[..., x:x + s, y:y + s, z:z + s] for x, y, z in corners[start:start + args.batch]])
                model.infer(batch)

    times = interleaved({"bare forward (reference)": bare, "score_volume": scored}, device,
                        warmup=max(args.warmup - 1, 0), repeats=args.repeats)
    ref = median(times["bare forward (reference)"])
    rows = [[name, median(t), n / median(t), median(t) / ref] for name, t in times.items()]
    print(f"3D sliding-window scoring: volume {args.channels} x {'x'.join(map(str, args.shape))}, {s}^3 windows, "
          f"overlap {args.overlap} -> {n} windows, batch {args.batch}, GANomaly width {args.width}, "
          f"scorers residual + latent, gaussian blend, device {device}{', bf16' if args.bf16 else ''}; "
          f"median of {args.repeats}")
    print(f"machine: {machine()}")
    print(table(["method", "s/volume", "windows/s", "x bare forward"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
