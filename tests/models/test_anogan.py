from __future__ import annotations

import pytest
import torch

from brats_ad.errors import ConfigError, DataError
from brats_ad.models.anogan import AnoGAN, AnoGANConfig
from brats_ad.models.base import AnomalyModel

SIZE = {2: 16, 3: 8}
dims = pytest.mark.parametrize("spatial_dims", [2, 3], ids=["2d", "3d"])
channels = pytest.mark.parametrize("in_channels", [1, 4])


def _model(spatial_dims: int, in_channels: int = 1, **kw) -> AnoGAN:
    torch.manual_seed(0)
    params = dict(spatial_dims=spatial_dims, in_channels=in_channels, image_size=SIZE[spatial_dims],
                  latent_size=8, width=4, gan_steps=2, encoder_steps=3, n_critic=2, steps=5)
    return AnoGAN.from_params(**{**params, **kw})


def _batch(spatial_dims: int, in_channels: int = 1, batch: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((batch, in_channels) + (SIZE[spatial_dims],) * spatial_dims, generator=gen) * 2 - 1


def _snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


@dims
@channels
@pytest.mark.parametrize("inference", ["encoder", "latent_optimisation"])
def test_infer_shapes_and_capabilities(spatial_dims, in_channels, inference):
    model = _model(spatial_dims, in_channels, inference=inference, steps=2).eval()
    assert isinstance(model, AnomalyModel)
    x = _batch(spatial_dims, in_channels)
    with torch.no_grad():
        out = model.infer(x)
    assert out.reconstruction.shape == x.shape
    assert out.latent_in.shape == out.latent_out.shape == (3, 8) + (1,) * spatial_dims
    assert out.disc_features_real.shape == out.disc_features_fake.shape
    assert out.disc_features_real.shape[0] == 3 and out.disc_features_real.shape[2:] == (4,) * spatial_dims
    assert out.image_score.shape == (3,) and torch.isfinite(out.image_score).all()
    assert out.provides() == {"reconstruction", "latent_pair", "disc_features", "image_score"}


@dims
@channels
def test_two_phases_update_the_right_networks(spatial_dims, in_channels):
    model = _model(spatial_dims, in_channels).train()
    opts = model.configure_optimizers()
    assert set(opts) == {"generator", "critic", "encoder"}
    x = _batch(spatial_dims, in_channels)
    g, d, e = _snapshot(model.generator), _snapshot(model.critic), _snapshot(model.encoder)
    losses = model.train_step(x, opts)  # step 0: critic only (n_critic=2)
    assert set(losses) == {"critic", "wasserstein", "gradient_penalty", "generator"}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert _changed(d, model.critic) and not _changed(g, model.generator)
    model.train_step(x, opts)  # step 1: critic and generator
    assert _changed(g, model.generator) and not _changed(e, model.encoder)
    assert not model.validation_ready

    g, d = _snapshot(model.generator), _snapshot(model.critic)
    losses = model.train_step(x, opts)  # step 2: the encoder phase
    assert set(losses) == {"izi_f", "image_residual", "feature_residual"}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert _changed(e, model.encoder)
    assert not _changed(g, model.generator) and not _changed(d, model.critic)
    assert model.validation_ready and model.training and model.generator.training
    assert all(p.requires_grad for p in model.parameters())  # freezing is undone


def test_step_counter_and_completion_survive_a_checkpoint():
    model = _model(2, gan_steps=1, encoder_steps=1).train()
    opts = model.configure_optimizers()
    x = _batch(2)
    model.train_step(x, opts)
    model.train_step(x, opts)
    assert model.training_complete and int(model.step) == model.total_steps == 2
    e = _snapshot(model.encoder)
    losses = model.train_step(x, opts)  # complete: reports, does not update
    assert "izi_f" in losses and not _changed(e, model.encoder) and int(model.step) == 2
    restored = _model(2, gan_steps=1, encoder_steps=1)
    restored.load_state_dict(model.state_dict())
    assert restored.training_complete


@dims
def test_eval_is_deterministic(spatial_dims):
    for inference in ("encoder", "latent_optimisation"):
        model = _model(spatial_dims, inference=inference, steps=3).eval()
        x = _batch(spatial_dims)
        with torch.no_grad():
            a, b = model.infer(x), model.infer(x)
        assert torch.equal(a.reconstruction, b.reconstruction)
        assert torch.equal(a.image_score, b.image_score)
        val = model.validation_loss(x)
        assert val.shape == (3,) and torch.isfinite(val).all()


@dims
def test_encoder_loss_decreases_on_a_tiny_healthy_set(spatial_dims):
    model = _model(spatial_dims, gan_steps=4, encoder_steps=100, encoder_lr=1e-2).train()
    opts = model.configure_optimizers()
    x = _batch(spatial_dims, batch=4) * 0.5
    for _ in range(4):
        model.train_step(x, opts)
    first = model.train_step(x, opts)["izi_f"]
    for _ in range(8):
        last = model.train_step(x, opts)["izi_f"]
    assert last < first


@dims
def test_latent_optimisation_reduces_its_loss_and_leaves_weights_alone(spatial_dims):
    model = _model(spatial_dims, latent_lr=0.2).eval()
    x = _batch(spatial_dims)
    before = _snapshot(model)
    with torch.inference_mode():  # it must turn gradients on by itself
        z, final, history = model.optimise_latent(x, steps=8)
    assert history[-1] < history[0]
    assert final.shape == (3,) and z.shape == (3, 8) + (1,) * spatial_dims
    assert not _changed(before, model)
    assert all(p.grad is None for p in model.parameters())


def test_latent_init_from_the_encoder_starts_at_the_encoder_code():
    model = _model(2, latent_init="encoder").eval()
    x = _batch(2)
    z, _, history = model.optimise_latent(x, steps=0)
    with torch.no_grad():
        assert torch.allclose(z, model.encoder(x))
        assert history == [pytest.approx(model.anogan_loss(x, model.encoder(x)).mean().item())]


def test_config_and_input_errors():
    with pytest.raises(ConfigError, match="image_size must be a power of 2 and >= 8, got 24"):
        AnoGANConfig(spatial_dims=2, image_size=24)
    with pytest.raises(ConfigError, match="inference must be one of encoder, latent_optimisation"):
        AnoGANConfig(spatial_dims=2, inference="fast")
    with pytest.raises(ConfigError, match="latent_lambda must be in"):
        AnoGANConfig(spatial_dims=2, latent_lambda=2.0)
    with pytest.raises(ConfigError, match="spatial_dims must be 2 or 3"):
        AnoGANConfig(spatial_dims=1)
    model = _model(2)
    with pytest.raises(DataError, match=r"expected \(B, 1, 16, 16\), got shape \(1, 1, 32, 32\)"):
        model.infer(torch.zeros(1, 1, 32, 32))
