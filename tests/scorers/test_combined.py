from __future__ import annotations

import json
import math

import pytest
import torch

from brats_ad.errors import ConfigError, DataError
from brats_ad.models.output import ModelOutput
from brats_ad.scorers.base import fit_if_needed
from brats_ad.scorers.combined import Combined


def _output(enc: float, residual: list[float], spatial_dims: int = 2, brain: list[bool] | None = None) -> ModelOutput:
    """One sample, 4 voxels (2x2 or 1x2x2): L_enc = enc, |x - x'| = residual."""
    spatial = (2, 2) if spatial_dims == 2 else (1, 2, 2)
    x = torch.zeros((1, 1, *spatial))
    rec = torch.tensor(residual).view(1, 1, *spatial)
    whole = (1,) * spatial_dims
    z = torch.tensor([math.sqrt(enc)]).view(1, 1, *whole)
    mask = None if brain is None else torch.tensor(brain).view(1, 1, *spatial)
    return ModelOutput(x=x, reconstruction=rec, latent_in=z, latent_out=torch.zeros_like(z), brain_mask=mask)


def _healthy(spatial_dims: int = 2) -> list[ModelOutput]:
    # L_enc: 1 and 3 -> mean 2, std 1. Residual brain voxels: 0, 2 (x2 batches) -> mean 1, std 1;
    # the outside-brain voxel (100) must not count.
    brain = [True, True, False, False]
    return [_output(1.0, [0.0, 2.0, 100.0, 100.0], spatial_dims, brain),
            _output(3.0, [2.0, 0.0, 100.0, 100.0], spatial_dims, brain)]


def test_fit_learns_healthy_stats_and_zscores_each_term(spatial_dims):
    scorer = Combined(alpha=2.0, beta=0.5).fit(_healthy(spatial_dims))
    stats = scorer.state_dict()["stats"]
    assert stats["enc_mean"] == pytest.approx(2.0) and stats["enc_std"] == pytest.approx(1.0)
    assert stats["con_mean"] == pytest.approx(1.0) and stats["con_std"] == pytest.approx(1.0)
    assert (stats["n_samples"], stats["n_voxels"]) == (2, 4)
    test = _output(4.0, [1.0, 5.0, 0.0, 3.0], spatial_dims)  # z_enc = 2; z_con = 0, 4, -1, 2
    score = scorer(test)
    expected = 2.0 * 2.0 + 0.5 * torch.tensor([0.0, 4.0, -1.0, 2.0])
    torch.testing.assert_close(score.anomaly_map.flatten(), expected)
    assert float(score.sample_score) == pytest.approx(float(expected.mean()))


def test_scoring_test_data_never_changes_the_fitted_stats():
    scorer = Combined().fit(_healthy())
    before = scorer.state_dict()
    for enc in (10.0, 50.0):
        scorer(_output(enc, [9.0, 9.0, 9.0, 9.0]))
    assert scorer.state_dict() == before


def test_refit_replaces_the_stats():
    scorer = Combined().fit(_healthy())
    scorer.fit([_output(0.0, [0.0, 4.0, 0.0, 4.0]), _output(2.0, [0.0, 4.0, 0.0, 4.0])])
    stats = scorer.state_dict()["stats"]
    assert stats["enc_mean"] == pytest.approx(1.0) and stats["con_mean"] == pytest.approx(2.0)


def test_fit_streams_batches_with_exact_moments():
    gen = torch.Generator().manual_seed(0)
    batches = [ModelOutput(x=torch.zeros(3, 1, 4, 4), reconstruction=torch.rand(3, 1, 4, 4, generator=gen),
                           latent_in=torch.rand(3, 2, 1, 1, generator=gen), latent_out=torch.zeros(3, 2, 1, 1))
               for _ in range(4)]
    stats = Combined().fit(iter(batches)).state_dict()["stats"]  # a one-pass iterator is enough
    voxels = torch.cat([b.reconstruction.flatten() for b in batches]).double()
    enc = torch.cat([b.latent_in.square().flatten(1).mean(1) for b in batches]).double()
    assert stats["con_mean"] == pytest.approx(float(voxels.mean()))
    assert stats["con_std"] == pytest.approx(float(voxels.std(unbiased=False)))
    assert stats["enc_std"] == pytest.approx(float(enc.std(unbiased=False)))


def test_state_dict_round_trip_through_json():
    scorer = Combined(alpha=0.3, beta=0.7, channels=[0]).fit(_healthy())
    state = json.loads(json.dumps(scorer.state_dict()))
    other = Combined(alpha=0.3, beta=0.7, channels=[0])
    other.load_state_dict(state)
    assert other.state_dict() == scorer.state_dict()
    test = _output(4.0, [1.0, 5.0, 0.0, 3.0])
    torch.testing.assert_close(other(test).anomaly_map, scorer(test).anomaly_map)


def test_state_fitted_with_other_options_is_refused():
    state = Combined(power=2).fit(_healthy()).state_dict()
    with pytest.raises(ConfigError, match="fitted with power=2 but this scorer has power=1"):
        Combined().load_state_dict(state)


def test_scoring_before_fit_is_a_clear_error():
    with pytest.raises(ConfigError, match="fit\\(\\) was not called"):
        Combined()(_output(1.0, [0.0, 0.0, 0.0, 0.0]))


def test_no_normalisation_needs_no_fit():
    scorer = Combined(alpha=1.0, beta=2.0, normalisation="none")
    fit_if_needed(scorer, [])  # the bench calls this; nothing to learn
    score = scorer(_output(3.0, [1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(score.anomaly_map.flatten(), torch.tensor([5.0, 3.0, 3.0, 3.0]))


def test_degenerate_healthy_data_is_an_error():
    with pytest.raises(DataError, match="fit got no healthy outputs"):
        Combined().fit([])
    with pytest.raises(DataError, match="healthy L_enc values have no spread"):
        Combined().fit([_output(1.0, [0.0, 1.0, 2.0, 3.0])])


@pytest.mark.parametrize(
    "kwargs, match",
    [({"alpha": 0, "beta": 0}, "both 0"), ({"normalisation": "minmax"}, "normalisation must be one of"),
     ({"alpha": float("nan")}, "alpha must be a finite number")],
)
def test_bad_params(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Combined(**kwargs)


def test_requires_both_terms():
    out = _output(1.0, [0.0, 0.0, 0.0, 0.0])
    out.latent_out = None
    with pytest.raises(ConfigError, match="scorer 'combined' requires 'latent_pair'"):
        Combined(normalisation="none")(out)


def test_slices_without_brain_add_no_voxels_to_the_healthy_stats():
    empty = _output(2.0, [50.0, 50.0, 50.0, 50.0], brain=[False, False, False, False])
    stats = Combined().fit([*_healthy(), empty]).state_dict()["stats"]
    assert stats["n_voxels"] == 4 and stats["con_mean"] == pytest.approx(1.0)
    assert stats["n_samples"] == 3  # its L_enc still counts
