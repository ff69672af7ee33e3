"""Score a whole processed volume: every scorer's map, voxel-aligned with the volume.

The model runs once per batch; every scorer reads that same :class:`ModelOutput` (a GAN or an
AnoGAN latent search is never rerun per scorer). Eval mode, ``torch.inference_mode``.

Geometry, stated once:

* **2D models** -- every axial slice (the Z axis of the ``(C, X, Y, Z)`` volume) goes through the
  :class:`~brats_ad.data.samplers.SliceDataset`'s own pad-to-square (edge values) + bilinear
  resize to ``size`` (the very function training used, so the model sees slices exactly as it
  was trained on), and each map comes back by the inverse: bilinear resize to the square side,
  then the padding cropped off. Slices without enough brain (fewer than ``min_brain_fraction`` of
  the slice area, and always those with no brain voxel at all) are not run; their voxels get the
  background value and their slice score is NaN.
* **3D models** -- MONAI ``sliding_window_inference`` with windows of the training patch size,
  ``overlap`` (default 0.5) and ``blend`` ``"gaussian"`` (default: a window's centre counts more
  than its edges) or ``"constant"`` (plain average). The model and every scorer run per window
  and the maps are stitched, so "constant"-kind scorers (one value per sample, e.g. latent)
  become smooth patch-wise maps. A volume smaller than the patch is padded (edge values) and
  the maps cropped back.
* **Background** -- voxels outside the brain mask get ``background``: by default (``"min"``) the
  smallest value the scorer gave inside the brain, so a threshold never selects background and
  an overlay stays dark there; or a fixed number.
* **Sample scores** -- 2D: one per slice (``sample_scores[name]``, shape ``(Z,)``, NaN for slices
  not run); 3D: one per window (``(N,)``, corners in ``windows``). The volume score is the
  largest sample score over slices / windows that hold enough brain ("the most anomalous part").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from brats_ad.data.samplers import fit_slice
from brats_ad.errors import ConfigError, DataError, PluginError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from brats_ad.models.output import ModelOutput
    from brats_ad.scorers.base import Scorer

DEFAULT_BATCH_SIZE = {2: 32, 3: 4}
BLEND_MODES = ("gaussian", "constant")


@dataclass(eq=False)
class VolumeScores(Mapping):
    """What :func:`score_volume` found; also a read-only mapping ``scorer name -> map``.

    ``maps[name]`` is ``(X, Y, Z)`` float32, voxel-aligned with the scored volume.
    """

    maps: dict[str, np.ndarray]
    #: 2D: ``(Z,)`` per slice (NaN where not run); 3D: ``(N,)`` per window
    sample_scores: dict[str, np.ndarray]
    #: one score per scorer for the whole volume (max over ``scored`` slices / windows; NaN if none)
    volume_scores: dict[str, float]
    #: 2D: ``(Z,)`` slices run; 3D: ``(N,)`` windows holding enough brain
    scored: np.ndarray
    #: per scorer, the value voxels outside the brain received
    fill: dict[str, float]
    spatial_dims: int
    #: 3D only: ``(N, 3)`` window corners ``(x0, y0, z0)`` on the volume grid
    windows: np.ndarray | None = None
    #: 3D only: ``(N,)`` brain fraction of each window
    window_brain_fraction: np.ndarray | None = None
    #: how many times the model ran (one per batch)
    model_calls: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.maps[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.maps)

    def __len__(self) -> int:
        return len(self.maps)


def score_volume(
    model: torch.nn.Module,
    image: np.ndarray | torch.Tensor,
    brain_mask: np.ndarray | torch.Tensor | None,
    scorers: Mapping[str, "Scorer"],
    *,
    spatial_dims: int,
    size: int | Sequence[int],
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    overlap: float = 0.5,
    blend: str = "gaussian",
    min_brain_fraction: float = 0.0,
    background: float | str = "min",
    case_id: str = "volume",
) -> VolumeScores:
    """Run ``model`` over a processed ``(C, X, Y, Z)`` volume and apply every scorer.

    ``size`` is the training slice size (2D) or patch size (3D, an int or three ints).
    ``device`` ``"auto"`` picks CUDA when available. See the module docstring for the geometry,
    the background value and the sample scores.
    """
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 (slices) or 3 (patches), got {spatial_dims!r}")
    if not scorers:
        raise ConfigError(f"case {case_id}: no scorers given; pass at least one (see 'brats-ad plugins')")
    if blend not in BLEND_MODES:
        raise ConfigError(f"blend must be one of {', '.join(BLEND_MODES)}, got {blend!r}")
    if not 0.0 <= float(overlap) < 1.0:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap!r}")
    if not 0.0 <= float(min_brain_fraction) <= 1.0:
        raise ConfigError(f"min_brain_fraction must be in [0, 1], got {min_brain_fraction!r}")
    if not (background == "min" or isinstance(background, (int, float))):
        raise ConfigError(f"background must be 'min' or a number, got {background!r}")
    img = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image).float().cpu()
    if img.ndim != 4:
        raise DataError(f"case {case_id}: expected a (C, X, Y, Z) volume, got shape {tuple(img.shape)}; add a channel axis")
    spatial = tuple(img.shape[1:])
    if brain_mask is None:
        mask = torch.ones(spatial, dtype=torch.bool)
    else:
        mask = torch.as_tensor(np.asarray(brain_mask) if not isinstance(brain_mask, torch.Tensor) else brain_mask).bool().cpu()
        if tuple(mask.shape) != spatial:
            raise DataError(
                f"case {case_id}: brain mask shape {tuple(mask.shape)} differs from the volume's {spatial}; "
                "pass the mask of the same processed scan"
            )
    dev = _device(device)
    batch = int(batch_size or DEFAULT_BATCH_SIZE[spatial_dims])
    if batch < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    model = model.to(dev).eval()
    counter = _CountingInfer(model)
    with torch.inference_mode():
        if spatial_dims == 2:
            result = _score_slices(counter, img, mask, scorers, int(_single(size)), batch, dev,
                                   float(min_brain_fraction), case_id)
        else:
            result = _score_windows(counter, img, mask, scorers, _triple(size), batch, dev, float(overlap),
                                    blend, float(min_brain_fraction), case_id)
    result.model_calls = counter.calls
    _fill_background(result, mask.numpy(), background, case_id)
    return result


# -- helpers shared by both paths ------------------------------------------------------------------
class _CountingInfer:
    """Calls ``model.infer`` and counts the calls (the result reports them: one per batch)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.calls = model, 0

    def __call__(self, x: torch.Tensor, mask: torch.Tensor) -> "ModelOutput":
        self.calls += 1
        out = self.model.infer(x)
        if out.brain_mask is None:
            out.brain_mask = mask
        return out


def _device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    from brats_ad.train.device import select_device

    return select_device(device)


def _single(size: int | Sequence[int]) -> int:
    if isinstance(size, (int, np.integer)):
        return int(size)
    values = {int(s) for s in size}
    if len(values) != 1:
        raise ConfigError(f"a 2D model needs one square slice size, got {size!r}")
    return values.pop()


def _triple(size: int | Sequence[int]) -> tuple[int, int, int]:
    t = (int(size),) * 3 if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if len(t) != 3 or min(t) < 1:
        raise ConfigError(f"a 3D model needs a patch size of one or three positive ints, got {size!r}")
    return t  # type: ignore[return-value]


def _apply(name: str, scorer: "Scorer", out: "ModelOutput", spatial: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(map (B, 1, *spatial) float32, sample score (B,) float32)`` of one scorer, checked."""
    score = scorer(out)
    amap, sample = score.anomaly_map, score.sample_score
    b = out.x.shape[0]
    want = (b, 1, *spatial)
    if amap.ndim == len(want) and amap.shape[0] == b and amap.shape[1] == 1 and all(
        s in (1, w) for s, w in zip(amap.shape[2:], spatial)
    ):
        amap = amap.expand(want)  # a "constant" map may come as (B, 1, 1, 1): broadcast it (a view)
    else:
        raise PluginError(
            f"scorer {name!r} returned a map of shape {tuple(amap.shape)}, expected {want} "
            "(voxel-aligned with ModelOutput.x); fix the scorer"
        )
    sample = sample.reshape(-1)
    if sample.shape[0] != b:
        raise PluginError(f"scorer {name!r} returned {sample.shape[0]} sample scores for a batch of {b}; expected (B,)")
    return amap.float(), sample.float()


def _fill_background(result: VolumeScores, mask: np.ndarray, background: float | str, case_id: str) -> None:
    """Voxels outside the brain (or in slices not run) get the background value; check finiteness."""
    valid = mask
    if result.spatial_dims == 2:
        valid = mask & result.scored[None, None, :]
    for name, vol in result.maps.items():
        inside = vol[valid]
        if inside.size and not np.isfinite(inside).all():
            raise PluginError(
                f"case {case_id}: scorer {name!r} gave NaN or inf inside the brain; check the model "
                "(a diverged checkpoint?) and the scorer's fitted statistics"
            )
        if background == "min":
            fill = float(inside.min()) if inside.size else 0.0
        else:
            fill = float(background)
        vol[~valid] = fill
        result.fill[name] = fill


def _max_or_nan(values: np.ndarray) -> float:
    return float(np.max(values)) if values.size else float("nan")


# -- 2D: axial slices ------------------------------------------------------------------------------
def to_slice_grid(t: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """``(C, X, Y) -> (C, size, size)``: the SliceDataset's pad-to-square + resize, reused as is.

    ``mode`` is ``"bilinear"`` (images) or ``"nearest"`` (masks).
    """
    return fit_slice(t, int(size), mode)


def from_slice_grid(maps: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`to_slice_grid` for maps: ``(B, S, S) -> (B, X, Y)``.

    Bilinear resize (``align_corners=False``, the forward convention) back to the square side
    ``max(X, Y)``, then the centred padding cropped off, so map voxels land on slice voxels.
    """
    x, y = shape
    side = max(x, y)
    if maps.shape[-2:] != (side, side):
        maps = F.interpolate(maps[:, None], size=(side, side), mode="bilinear", align_corners=False)[:, 0]
    lo = abs(x - y) // 2
    if x > y:
        maps = maps[:, :, lo:lo + y]
    elif y > x:
        maps = maps[:, lo:lo + x, :]
    return maps


def _score_slices(infer, img, mask, scorers, size, batch, dev, min_brain, case_id) -> VolumeScores:
    c, x, y, z = img.shape
    brain = mask.sum(dim=(0, 1)).numpy()  # (Z,) brain voxels per slice
    scored = (brain > 0) & (brain >= min_brain * x * y)
    maps = {name: np.full((x, y, z), np.nan, dtype=np.float32) for name in scorers}
    samples = {name: np.full(z, np.nan, dtype=np.float32) for name in scorers}
    zs = np.flatnonzero(scored)
    for start in range(0, len(zs), batch):
        zb = torch.from_numpy(zs[start:start + batch])
        b = len(zb)
        xb = img.index_select(3, zb).permute(3, 0, 1, 2)  # (B, C, X, Y)
        # pad/resize treat channels independently: fold the batch into channels for one call
        xs = to_slice_grid(xb.reshape(b * c, x, y), size, "bilinear").reshape(b, c, size, size)
        mb = mask.index_select(2, zb).permute(2, 0, 1)  # (B, X, Y)
        ms = to_slice_grid(mb, size, "nearest").float() > 0.5  # (B, S, S)
        out = infer(xs.to(dev), ms[:, None].to(dev))
        for name, scorer in scorers.items():
            amap, sample = _apply(name, scorer, out, (size, size))
            back = from_slice_grid(amap[:, 0].cpu(), (x, y))  # (B, X, Y)
            maps[name][:, :, zb.numpy()] = back.permute(1, 2, 0).numpy()
            samples[name][zb.numpy()] = sample.cpu().numpy()
    volume = {name: _max_or_nan(s[scored]) for name, s in samples.items()}
    return VolumeScores(maps=maps, sample_scores=samples, volume_scores=volume, scored=scored,
                        fill={}, spatial_dims=2)


# -- 3D: sliding windows ---------------------------------------------------------------------------
def _score_windows(infer, img, mask, scorers, size, batch, dev, overlap, blend, min_brain, case_id) -> VolumeScores:
    from monai.inferers import sliding_window_inference

    spatial = tuple(img.shape[1:])
    pad = [max(s - n, 0) // 2 for s, n in zip(size, spatial)]  # MONAI pads small volumes centrally
    corners: list[list[int]] = []
    fractions: list[torch.Tensor] = []
    samples: dict[str, list[torch.Tensor]] = {name: [] for name in scorers}

    def predictor(win: torch.Tensor, coords: list, condition: torch.Tensor) -> dict[str, torch.Tensor]:
        wmask = condition > 0.5  # (B, 1, *size)
        out = infer(win, wmask)
        maps = {}
        for name, scorer in scorers.items():
            amap, sample = _apply(name, scorer, out, tuple(win.shape[2:]))
            maps[name] = amap.clone()  # MONAI weights outputs in place: never hand it a view of x
            samples[name].append(sample.cpu())
        fractions.append(wmask.flatten(1).float().mean(1).cpu())
        corners.extend([int(c[k + 2].start) - pad[k] for k in range(3)] for c in coords)
        return maps

    x = img[None].to(dev)  # (1, C, X, Y, Z)
    cond = mask[None, None].to(dev, torch.float32)
    stitched = sliding_window_inference(
        x, roi_size=size, sw_batch_size=batch, predictor=predictor, overlap=overlap, mode=blend,
        padding_mode="replicate", sw_device=dev, device=dev, with_coord=True, condition=cond,
    )
    if isinstance(stitched, torch.Tensor):  # one output comes back bare in some MONAI versions
        stitched = {next(iter(scorers)): stitched}
    maps = {name: np.ascontiguousarray(stitched[name][0, 0].float().cpu().numpy(), dtype=np.float32)
            for name in scorers}
    frac = torch.cat(fractions).numpy() if fractions else np.zeros(0, np.float32)
    scored = (frac > 0) & (frac >= min_brain)
    sample_arrays = {name: torch.cat(s).numpy() if s else np.zeros(0, np.float32) for name, s in samples.items()}
    volume = {name: _max_or_nan(s[scored]) for name, s in sample_arrays.items()}
    return VolumeScores(
        maps=maps, sample_scores=sample_arrays, volume_scores=volume, scored=scored, fill={},
        spatial_dims=3, windows=np.asarray(corners, dtype=np.int64).reshape(-1, 3), window_brain_fraction=frac,
    )
