"""``combined``: ``alpha * L_enc + beta * L_con``, each term normalised on HEALTHY data first.

L_enc (a per-sample latent error, :mod:`~brats_ad.scorers.latent`) and L_con (a per-voxel
residual, :mod:`~brats_ad.scorers.residual`) live on unrelated scales, so weighting them raw
mostly measures their units. With ``normalisation="zscore"`` (default), :meth:`Combined.fit`
learns from healthy validation outputs

* ``mu_enc, sd_enc``: mean and standard deviation of the healthy L_enc sample scores;
* ``mu_con, sd_con``: mean and standard deviation of the healthy residual voxel values inside
  the brain (streamed: one batch in memory at a time),

and the map is ``alpha * (L_enc - mu_enc) / sd_enc + beta * (r - mu_con) / sd_con`` per voxel
(the L_enc term broadcast over the sample). Scoring never updates the statistics; only ``fit``
does, and only from the outputs it is given. :meth:`state_dict` / :meth:`load_state_dict`
carry them as JSON so ``predict`` reuses the bench's. ``normalisation="none"`` combines raw terms
and needs no fit.

Sample score: the mean of the map over the brain.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from brats_ad.errors import ConfigError, DataError
from brats_ad.models.output import ModelOutput
from brats_ad.scorers.common import MapScorer, check_power
from brats_ad.scorers.latent import latent_error
from brats_ad.scorers.residual import check_channels, residual_map

STATE_VERSION = 1
NORMALISATIONS = ("zscore", "none")
_STAT_KEYS = {"enc_mean": float, "enc_std": float, "con_mean": float, "con_std": float,
              "n_samples": int, "n_voxels": int}


class _Moments:
    """Streaming count, mean and sum of squared deviations (Chan et al.'s pairwise update), so
    millions of voxels merge in float64 without the cancellation of ``E[x^2] - E[x]^2``."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: Tensor) -> None:
        values = values.detach().double().flatten()
        n_b = values.numel()
        if n_b == 0:
            return
        mean_b = float(values.mean())
        m2_b = float((values - mean_b).square().sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.n) if self.n else float("nan")


class Combined(MapScorer):
    """``alpha * z_enc + beta * z_con`` per voxel (see the module docstring).

    Parameters
    ----------
    alpha, beta: weights of the L_enc and L_con terms (each pair is its own bench cell).
    normalisation: ``"zscore"`` (fit on healthy outputs first) or ``"none"``.
    power, channels: the residual's options (as for ``residual``).
    postprocess: see :class:`~brats_ad.scorers.postprocess.PostProcess`.
    """

    name = "combined"
    requires = frozenset({"latent_pair", "reconstruction"})
    map_kind = "voxel"

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, normalisation: str = "zscore",
                 power: int = 1, channels: Sequence[int] | None = None,
                 postprocess: Mapping[str, Any] | None = None) -> None:
        super().__init__(postprocess)
        for label, value in (("alpha", alpha), ("beta", beta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"scorer 'combined': {label} must be a finite number, got {value!r}")
        if alpha == 0 and beta == 0:
            raise ConfigError("scorer 'combined': alpha and beta are both 0, so every map is 0; give one a weight")
        if normalisation not in NORMALISATIONS:
            raise ConfigError(
                f"scorer 'combined': normalisation must be one of {', '.join(NORMALISATIONS)}, got {normalisation!r}"
            )
        self.alpha, self.beta = float(alpha), float(beta)
        self.normalisation = normalisation
        self.power = check_power(power, self.name)
        self.channels = check_channels(channels, self.name)
        self._stats: dict[str, float] | None = None

    # -- fitting on healthy data ---------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self._stats is not None

    @torch.no_grad()
    def fit(self, healthy_outputs: Iterable[ModelOutput]) -> "Combined":
        """Learn the per-term statistics from HEALTHY validation outputs (replaces earlier ones)."""
        if self.normalisation == "none":
            return self
        enc, con = _Moments(), _Moments()
        for output in healthy_outputs:
            self.check(output)
            enc.update(latent_error(output, self.name))
            residual = residual_map(output, self.power, self.channels, self.name)
            # brain voxels only; a slice without brain adds none (brain_region's fallback is for scores)
            inside = torch.ones_like(residual, dtype=torch.bool) if output.brain_mask is None \
                else output.brain_mask.to(device=residual.device, dtype=torch.bool)
            con.update(residual[inside])
        if enc.n == 0:
            raise DataError("scorer 'combined': fit got no healthy outputs; pass the healthy validation outputs")
        for label, moments, unit in (("L_enc", enc, "samples"), ("L_con", con, "brain voxels")):
            if not moments.std > 0.0:
                raise DataError(
                    f"scorer 'combined': healthy {label} values have no spread ({moments.n} {unit}, all "
                    f"{moments.mean:.6g}); fit on more healthy samples or use normalisation='none'"
                )
        self._stats = {"enc_mean": enc.mean, "enc_std": enc.std, "con_mean": con.mean, "con_std": con.std,
                       "n_samples": enc.n, "n_voxels": con.n}
        return self

    def state_dict(self) -> dict[str, Any]:
        """The fitted statistics and the options they depend on, JSON-safe."""
        return {
            "version": STATE_VERSION,
            "normalisation": self.normalisation,
            "power": self.power,
            "channels": None if self.channels is None else list(self.channels),
            "stats": None if self._stats is None else dict(self._stats),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; options that change the statistics must match."""
        if state.get("version") != STATE_VERSION:
            raise ConfigError(
                f"scorer 'combined': state version {state.get('version')!r} is not {STATE_VERSION}; "
                "refit on healthy validation outputs"
            )
        mine = self.state_dict()
        for key in ("normalisation", "power", "channels"):
            theirs = state.get(key)
            if theirs != mine[key]:
                raise ConfigError(
                    f"scorer 'combined': saved statistics were fitted with {key}={theirs!r} but this "
                    f"scorer has {key}={mine[key]!r}; use the same options or refit"
                )
        stats = state.get("stats")
        if stats is None:
            self._stats = None
            return
        missing = sorted(set(_STAT_KEYS) - set(stats))
        if missing:
            raise ConfigError(f"scorer 'combined': saved statistics lack {', '.join(missing)}; refit")
        self._stats = {key: cast(stats[key]) for key, cast in _STAT_KEYS.items()}

    # -- scoring -------------------------------------------------------------------------------
    def anomaly_map(self, output: ModelOutput) -> Tensor:
        self.check(output)
        enc = latent_error(output, self.name)  # (B,)
        con = residual_map(output, self.power, self.channels, self.name)  # (B, 1, *spatial)
        if self.normalisation == "zscore":
            if self._stats is None:
                raise ConfigError(
                    "scorer 'combined': normalisation='zscore' needs healthy statistics but fit() was not "
                    "called; call fit(healthy_validation_outputs) (or load_state_dict) first, or use "
                    "normalisation='none'"
                )
            s = self._stats
            enc = (enc - s["enc_mean"]) / s["enc_std"]
            con = (con - s["con_mean"]) / s["con_std"]
        shape = (enc.shape[0],) + (1,) * (con.dim() - 1)
        return (self.alpha * enc.reshape(shape) + self.beta * con).to(torch.float32)
