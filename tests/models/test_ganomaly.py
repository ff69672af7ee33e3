"""GANomaly: shapes, losses, training behaviour, init and config checks (2D and 3D, CPU, tiny)."""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch

import brats_ad.models.ganomaly as ganomaly_module
from brats_ad.errors import ConfigError, DataError
from brats_ad.models.base import AnomalyModel
from brats_ad.models.ganomaly import Ganomaly, GanomalyConfig
from brats_ad.models.output import ModelOutput

LOSS_KEYS = {"loss_g", "loss_adv", "loss_con", "loss_enc", "loss_d"}


def _config(spatial_dims: int, in_channels: int = 1, **kw) -> GanomalyConfig:
    # 2D: 32^2 with anomalib's stem padding; 3D: 16^3 with the reference code's (padding 1)
    size = {"image_size": 32} if spatial_dims == 2 else {"image_size": 16, "initial_padding": 1}
    base = dict(in_channels=in_channels, latent_size=16, width=8, **size)
    return GanomalyConfig(spatial_dims, **{**base, **kw})


def _model(spatial_dims: int, in_channels: int = 1, seed: int = 0, **kw) -> Ganomaly:
    torch.manual_seed(seed)
    return Ganomaly(_config(spatial_dims, in_channels, **kw))


def _blobs(batch: int, config: GanomalyConfig, seed: int = 0) -> torch.Tensor:
    """Smooth 'healthy' inputs in [-1, 1]: a dark background with one or two Gaussian blobs."""
    gen = torch.Generator().manual_seed(seed)
    d, n = config.spatial_dims, config.image_size
    axes = torch.meshgrid(*[torch.linspace(-1, 1, n)] * d, indexing="ij")
    out = torch.zeros((batch, config.in_channels) + (n,) * d)
    for b in range(batch):
        for _ in range(2):
            centre = torch.rand(d, generator=gen) * 0.8 - 0.4
            width = 0.25 + 0.2 * torch.rand(1, generator=gen).item()
            r2 = sum((ax - c) ** 2 for ax, c in zip(axes, centre))
            out[b] += torch.exp(-r2 / (2 * width**2))
    return out.clamp(0, 1) * 2 - 1


@pytest.fixture(params=[(2, 1), (2, 4), (3, 1), (3, 4)], ids=["2d-1ch", "2d-4ch", "3d-1ch", "3d-4ch"])
def case(request):
    spatial_dims, channels = request.param
    model = _model(spatial_dims, channels)
    return model, _blobs(2, model.config)


def test_is_an_anomaly_model():
    model = _model(2)
    assert isinstance(model, AnomalyModel)
    assert model.trainable is True


def test_output_shapes(case):
    model, x = case
    c = model.config
    out = model.infer(x)
    assert isinstance(out, ModelOutput)
    assert out.provides() == {"reconstruction", "latent_pair", "disc_features", "image_score"}
    ones = (1,) * c.spatial_dims
    assert out.reconstruction.shape == x.shape
    assert out.latent_in.shape == out.latent_out.shape == (2, c.latent_size) + ones
    feat = (2, c.width * 2 ** (int(math.log2(c.image_size)) - 3)) + (4,) * c.spatial_dims
    assert out.disc_features_real.shape == out.disc_features_fake.shape == feat
    assert out.image_score.shape == (2,)
    assert out.reconstruction.min() >= -1 and out.reconstruction.max() <= 1  # tanh
    expected = (out.latent_in - out.latent_out).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(out.image_score, expected)


def test_default_padding_works_in_3d():
    model = _model(3, image_size=32, initial_padding=4)
    out = model.infer(torch.zeros(1, 1, 32, 32, 32))
    assert out.latent_in.shape == (1, 16, 1, 1, 1)


def test_train_step_finite_and_updates_both_networks(case):
    model, x = case
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = model.train_step(x, model.configure_optimizers())
    assert set(losses) == LOSS_KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in losses.values())
    c = model.config
    total = c.w_adv * losses["loss_adv"] + c.w_con * losses["loss_con"] + c.w_enc * losses["loss_enc"]
    assert losses["loss_g"] == pytest.approx(total, rel=1e-5)
    for part in ("generator", "discriminator"):
        changed = [not torch.equal(p, before[f"{part}.{n}"]) for n, p in getattr(model, part).named_parameters()]
        assert all(changed), f"{part}: {changed.count(False)} parameter tensors did not move"


def test_eval_is_deterministic_and_leaves_state_alone(case):
    model, x = case
    model.train_step(x, model.configure_optimizers())
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    a, b = model.infer(x), model.infer(x)
    torch.testing.assert_close(a.reconstruction, b.reconstruction, rtol=0, atol=0)
    torch.testing.assert_close(a.image_score, b.image_score, rtol=0, atol=0)
    assert model.training  # previous mode restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # running statistics untouched
    # eval mode: a sample's score does not depend on its batch mates
    alone = model.infer(x[:1]).image_score
    torch.testing.assert_close(alone, a.image_score[:1], rtol=1e-4, atol=1e-6)


def test_eval_batch_stats_option_uses_batch_statistics():
    model = _model(2, eval_batch_stats=True)
    x = _blobs(4, model.config)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    together = model.infer(x).image_score
    alone = model.infer(x[:2]).image_score
    assert not torch.allclose(together[:2], alone, rtol=1e-4, atol=1e-6)  # batch-dependent
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # running statistics untouched


def test_validation_loss_is_per_sample_reconstruction_quality(case):
    model, x = case
    loss = model.validation_loss(x)
    out = model.infer(x)
    c = model.config
    con = (out.reconstruction - x).abs().flatten(1).mean(1)
    enc = (out.latent_in - out.latent_out).pow(2).flatten(1).mean(1)
    assert loss.shape == (x.shape[0],)
    torch.testing.assert_close(loss, c.w_con * con + c.w_enc * enc)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_losses_decrease_on_healthy_blobs(spatial_dims):
    model = _model(spatial_dims, lr=2e-3)  # 10x the paper's lr: 20 steps must show progress
    x = _blobs(8 if spatial_dims == 2 else 4, model.config, seed=1)
    x_val = _blobs(4, model.config, seed=2)
    opts = model.configure_optimizers()
    start = model.validation_loss(x_val).mean().item()
    history = [model.train_step(x, opts) for _ in range(20)]
    assert all(math.isfinite(v) for h in history for v in h.values())
    first = sum(h["loss_con"] for h in history[:5]) / 5
    last = sum(h["loss_con"] for h in history[-5:]) / 5
    assert last < 0.65 * first, (first, last)
    # on held-out blobs in eval mode (running statistics lag a little behind)
    assert model.validation_loss(x_val).mean().item() < 0.9 * start


def test_discriminator_reinitialised_when_its_loss_collapses(monkeypatch):
    model = _model(2)
    x = _blobs(2, model.config)
    twin = _model(2)
    twin.load_state_dict(model.state_dict())
    opts, twin_opts = model.configure_optimizers(), twin.configure_optimizers()
    twin.train_step(x, twin_opts)
    assert twin.d_reinit_count == 0

    real_loss = ganomaly_module.discriminator_loss
    monkeypatch.setattr(ganomaly_module, "discriminator_loss", lambda r, f: real_loss(r, f) * 1e-9)
    losses = model.train_step(x, opts)
    assert losses["loss_d"] < Ganomaly.d_reinit_below
    assert model.d_reinit_count == 1
    # the generator took the same step; D got fresh DCGAN weights instead of its update
    for a, b in zip(model.generator.parameters(), twin.generator.parameters()):
        torch.testing.assert_close(a, b)
    norms = [m.weight for m in model.discriminator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    twin_norms = [m.weight for m in twin.discriminator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not torch.allclose(a, b) for a, b in zip(norms, twin_norms))
    assert all(m.bias.abs().max() == 0 for m in model.discriminator.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_dcgan_init_reaches_every_layer():
    torch.manual_seed(0)
    model = Ganomaly(GanomalyConfig(2, image_size=64, width=32, latent_size=64))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in convs)
    for conv in convs:
        w = conv.weight.detach()
        if w.numel() >= 4096:  # enough draws for a tight estimate
            assert abs(w.mean().item()) < 0.002
            assert w.std().item() == pytest.approx(0.02, rel=0.1), type(conv).__name__
        assert w.abs().max().item() < 0.02 * 7  # no default (kaiming-uniform) layer left
    weights = torch.cat([m.weight.detach() for m in norms])
    assert not torch.all(weights == 1)  # PyTorch's default BN init is exactly 1
    assert weights.mean().item() == pytest.approx(1.0, abs=0.01)
    assert weights.std().item() == pytest.approx(0.02, rel=0.25)
    assert all(m.bias.abs().max() == 0 for m in norms)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(spatial_dims=2, image_size=48), r"image_size must be a power of 2, got 48.*32 or 64"),
        (dict(spatial_dims=4), r"spatial_dims must be 2 \(slices\) or 3 \(patches\), got 4"),
        (dict(spatial_dims=2, in_channels=0), r"in_channels must be an integer >= 1, got 0"),
        (dict(spatial_dims=2, image_size=16), r"image_size 16 with initial_padding 4 .* need 4"),
        (dict(spatial_dims=2, add_final_conv=False), r"add_final_conv=False"),
        (dict(spatial_dims=2, w_con=-1.0), r"w_con must be a finite number >= 0, got -1.0"),
        (dict(spatial_dims=2, beta1=1.0), r"beta1 must be in \[0, 1\)"),
        (dict(spatial_dims=2, lr=0), r"lr must be a finite number > 0"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        GanomalyConfig(**kwargs)


def test_from_params_and_config_round_trip():
    with pytest.raises(ConfigError, match=r"no parameter 'widht'"):
        Ganomaly.from_params(spatial_dims=2, widht=8)
    with pytest.raises(ConfigError, match="expected a GanomalyConfig"):
        Ganomaly({"spatial_dims": 2})  # type: ignore[arg-type]
    model = Ganomaly.from_params(**asdict(_config(3)))
    clone = Ganomaly(GanomalyConfig(**asdict(model.config)))
    clone.load_state_dict(model.state_dict())
    x = _blobs(1, model.config)
    torch.testing.assert_close(clone.infer(x).image_score, model.infer(x).image_score)


def test_paper_defaults():
    c = GanomalyConfig(2)
    assert (c.in_channels, c.image_size, c.latent_size, c.width, c.extra_layers) == (1, 128, 100, 64, 0)
    assert (c.w_adv, c.w_con, c.w_enc, c.lr, c.beta1, c.beta2) == (1.0, 50.0, 1.0, 2e-4, 0.5, 0.999)
    assert c.eval_batch_stats is False


def test_optimisers_split_generator_and_discriminator():
    model = _model(2)
    opts = model.configure_optimizers()
    assert set(opts) == {"generator", "discriminator"}
    for name, opt in opts.items():
        assert isinstance(opt, torch.optim.Adam)
        group = opt.param_groups[0]
        assert group["lr"] == 2e-4 and group["betas"] == (0.5, 0.999)
        assert {id(p) for p in group["params"]} == {id(p) for p in getattr(model, name).parameters()}


def test_wrong_input_shape_names_both_sides():
    model = _model(2)
    with pytest.raises(DataError, match=r"expected input \(B, 1, 32, 32\), got \(2, 1, 64, 64\)"):
        model.infer(torch.zeros(2, 1, 64, 64))
