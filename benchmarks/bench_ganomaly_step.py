"""GANomaly training step: brats-ad's ``Ganomaly.train_step`` against anomalib's ``GanomalyModel``.

The paper's 2D configuration by default (1x128^2, batch 64, width 64, latent 100). anomalib's
side is its Lightning ``training_step`` written out: ``GeneratorLoss``, ``DiscriminatorLoss``,
two Adam optimisers, generator update then discriminator update, ``.item()`` on both losses.
Both models start from the same weights. Timed steps alternate between the two models so load
drift on a shared machine hits both alike; prints median ms/step and the ratio (anomalib / ours,
> 1 means ours is faster). Without anomalib installed only our figure is printed.

    python benchmarks/bench_ganomaly_step.py --steps 8 --warmup 2            # CPU
    python benchmarks/bench_ganomaly_step.py --device cuda --bf16 --channels-last --steps 50
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from collections import OrderedDict
from typing import Callable

import torch

from _timing import interleaved, setup_torch
from brats_ad.models.ganomaly import Ganomaly, GanomalyConfig


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _ours(config: GanomalyConfig, device: torch.device, channels_last: bool, bf16: bool):
    model = Ganomaly(config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opts = model.configure_optimizers()

    def step(x: torch.Tensor) -> None:
        with _autocast(device, bf16):
            model.train_step(x, opts)

    return model, step


def _anomalib(config: GanomalyConfig, ours: Ganomaly, device: torch.device, channels_last: bool,
              bf16: bool) -> Callable[[torch.Tensor], None] | None:
    try:
        from anomalib.models.image.ganomaly.loss import DiscriminatorLoss, GeneratorLoss
        from anomalib.models.image.ganomaly.torch_model import GanomalyModel
    except ImportError:
        return None
    c = config
    model = GanomalyModel(input_size=(c.image_size, c.image_size), num_input_channels=c.in_channels,
                          n_features=c.width, latent_vec_size=c.latent_size, extra_layers=c.extra_layers,
                          add_final_conv_layer=True)
    # same weights as ours (state_dicts map one to one by position; see the parity tests)
    model.load_state_dict(OrderedDict(zip(model.state_dict(), ours.state_dict().values())))
    model = model.to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    g_loss_fn, d_loss_fn = GeneratorLoss(c.w_adv, c.w_con, c.w_enc), DiscriminatorLoss()
    betas = (c.beta1, c.beta2)
    d_opt = torch.optim.Adam(model.discriminator.parameters(), lr=c.lr, betas=betas)
    g_opt = torch.optim.Adam(model.generator.parameters(), lr=c.lr, betas=betas)
    f32 = lambda *ts: [t.float() for t in ts]  # noqa: E731  (BCE is not autocast-safe)

    def step(x: torch.Tensor) -> None:
        with _autocast(device, bf16):
            padded, fake, latent_i, latent_o = model(x)
            pred_real, _ = model.discriminator(padded)
            pred_fake, _ = model.discriminator(fake)
            with torch.autocast(device_type=device.type, enabled=False):
                g_loss = g_loss_fn(*f32(latent_i, latent_o, padded, fake, pred_real, pred_fake))
            g_opt.zero_grad()
            g_loss.backward(retain_graph=True)
            g_opt.step()
            pred_fake, _ = model.discriminator(fake.detach())
            with torch.autocast(device_type=device.type, enabled=False):
                d_loss = d_loss_fn(*f32(pred_real, pred_fake))
            d_opt.zero_grad()
            d_loss.backward()
            d_opt.step()
        g_loss.item(), d_loss.item()  # as anomalib's log_dict does

    return step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--latent", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-anomalib", action="store_true", help="time ours only")
    args = parser.parse_args(argv)

    device = setup_torch(args.device, args.threads)
    config = GanomalyConfig(2, in_channels=args.channels, image_size=args.size,
                            latent_size=args.latent, width=args.width)
    ours, ours_step = _ours(config, device, args.channels_last, args.bf16)
    theirs_step = None if args.no_anomalib else _anomalib(config, ours, device, args.channels_last, args.bf16)
    x = torch.rand(args.batch, args.channels, args.size, args.size, device=device) * 2 - 1
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    steps = {"brats-ad": ours_step}
    if theirs_step is not None:
        steps["anomalib"] = theirs_step
    times = interleaved({name: (lambda step=step: step(x)) for name, step in steps.items()}, device,
                        warmup=args.warmup, repeats=args.steps)

    params = sum(p.numel() for p in ours.parameters())
    print(f"GANomaly train step: {args.batch}x{args.channels}x{args.size}^2, width {args.width}, "
          f"latent {args.latent}, {params / 1e6:.1f}M params, device {device}"
          f"{', bf16' if args.bf16 else ''}{', channels_last' if args.channels_last else ''}, "
          f"threads {torch.get_num_threads()}, {args.steps} timed steps after {args.warmup} warm-up")
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"  {name:9s} median {ms[name]:9.1f} ms/step   (min {1e3 * min(t):.1f}, max {1e3 * max(t):.1f})")
    if "anomalib" in ms:
        best = min(times["anomalib"]) / min(times["brats-ad"])
        print(f"  speed-up (anomalib / brats-ad): {ms['anomalib'] / ms['brats-ad']:.2f}x median, "
              f"{best:.2f}x best-of")
    else:
        print("  anomalib not installed (or --no-anomalib): our figure only")


if __name__ == "__main__":
    main()
