from __future__ import annotations

import pytest
import torch

from brats_ad.errors import ConfigError, DataError
from brats_ad.models.autoencoder import AutoEncoderConfig, AutoEncoderModel

SIZE = {2: 16, 3: 8}


def _model(spatial_dims: int, in_channels: int = 1, variant: str = "ae", **kw) -> AutoEncoderModel:
    torch.manual_seed(0)
    params = dict(spatial_dims=spatial_dims, in_channels=in_channels, variant=variant,
                  image_size=SIZE[spatial_dims], channels=(4, 8), strides=(2, 2), latent_size=8)
    return AutoEncoderModel.from_params(**{**params, **kw})


def _batch(spatial_dims: int, in_channels: int = 1, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((batch, in_channels) + (SIZE[spatial_dims],) * spatial_dims, generator=gen) * 2 - 1


dims = pytest.mark.parametrize("spatial_dims", [2, 3], ids=["2d", "3d"])
channels = pytest.mark.parametrize("in_channels", [1, 4])
variants = pytest.mark.parametrize("variant", ["ae", "vae"])


@dims
@channels
@variants
def test_infer_shapes_and_capabilities(spatial_dims, in_channels, variant):
    model = _model(spatial_dims, in_channels, variant).eval()
    x = _batch(spatial_dims, in_channels)
    with torch.no_grad():
        out = model.infer(x)
    assert out.reconstruction.shape == x.shape
    assert out.reconstruction.abs().max() <= 1.0  # tanh output
    assert out.latent_in.shape == out.latent_out.shape
    assert out.latent_in.shape[:2] == (2, 8)
    assert out.latent_in.ndim == spatial_dims + 2
    if variant == "vae":
        assert out.latent_in.shape[2:] == (1,) * spatial_dims
    else:
        assert out.latent_in.shape[2:] == (SIZE[spatial_dims] // 4,) * spatial_dims
    assert out.provides() == {"reconstruction", "latent_pair"}


@dims
@channels
@variants
def test_train_step_finite_and_changes_weights(spatial_dims, in_channels, variant):
    model = _model(spatial_dims, in_channels, variant).train()
    opts = model.configure_optimizers()
    assert set(opts) == {"autoencoder"}
    before = [p.detach().clone() for p in model.parameters()]
    losses = model.train_step(_batch(spatial_dims, in_channels), opts)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert ("kl" in losses) == (variant == "vae")
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


@dims
@variants
def test_eval_is_deterministic_and_validation_loss_per_sample(spatial_dims, variant):
    model = _model(spatial_dims, 1, variant).eval()
    x = _batch(spatial_dims, batch=3)
    with torch.no_grad():
        a, b = model.infer(x), model.infer(x)
        val = model.validation_loss(x)
    assert torch.equal(a.reconstruction, b.reconstruction)
    assert torch.equal(a.latent_in, b.latent_in)
    assert val.shape == (3,) and torch.isfinite(val).all()


@dims
@variants
def test_loss_decreases_on_a_tiny_healthy_set(spatial_dims, variant):
    model = _model(spatial_dims, 1, variant, lr=1e-2, loss="l1").train()
    opts = model.configure_optimizers()
    x = _batch(spatial_dims, batch=4) * 0.5  # a fixed "healthy" set
    with torch.no_grad():
        start = model.eval().validation_loss(x).mean()
    model.train()
    for _ in range(10):
        model.train_step(x, opts)
    with torch.no_grad():
        end = model.eval().validation_loss(x).mean()
    assert end < 0.85 * start


def test_identity_output_is_unbounded_and_lists_become_tuples():
    model = _model(2, output_activation="identity", channels=[4, 8], strides=[2, 2])
    assert model.config.channels == (4, 8) and model.config.strides == (2, 2)
    with torch.no_grad():
        out = model.eval().infer(_batch(2) * 10)
    assert out.reconstruction.shape == (2, 1, 16, 16)


def test_config_errors_name_both_sides():
    with pytest.raises(ConfigError, match="got 3 channels but 2 strides"):
        AutoEncoderConfig(spatial_dims=2, channels=(4, 8, 16), strides=(2, 2))
    with pytest.raises(ConfigError, match="variant must be one of ae, vae; got 'gan'"):
        AutoEncoderConfig(spatial_dims=2, variant="gan")
    with pytest.raises(ConfigError, match="spatial_dims must be 2 or 3"):
        AutoEncoderConfig(spatial_dims=1)
    with pytest.raises(ConfigError, match="image_size 20 is not divisible by the total stride 16"):
        AutoEncoderConfig(spatial_dims=2, image_size=20)


def test_input_mismatch_is_a_data_error():
    model = _model(2, in_channels=1)
    with pytest.raises(DataError, match=r"got shape \(2, 4, 16, 16\)"):
        model.infer(_batch(2, in_channels=4))
    with pytest.raises(DataError, match="not divisible by the total stride 4"):
        model.infer(torch.zeros(1, 1, 18, 18))
    vae = _model(2, variant="vae")
    with pytest.raises(DataError, match="expected spatial size 16"):
        vae.infer(torch.zeros(1, 1, 32, 32))
