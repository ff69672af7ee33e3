"""Synthetic glioma-like tumours: irregular nested compartments and the mass effect they cause.

Labels follow BraTS 2021: 1 necrotic core, 2 oedema, 4 enhancing rim. Shapes are level sets of a
distance-like field plus smoothed noise (lobulated, never a perfect sphere); oedema prefers white
matter, as vasogenic oedema spreads along it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NECROSIS, OEDEMA, ENHANCING = 1, 2, 4


@dataclass(frozen=True)
class TumourSpec:
    """Per-case tumour geometry (BraTS voxel coordinates; 1 voxel = 1 mm)."""

    centre: np.ndarray  # (3,) float
    radius: float  # whole-tumour (oedema) mean radius
    core_fraction: float  # core radius / whole radius
    necrosis_fraction: float  # necrosis radius / core radius
    axes: np.ndarray  # (3,) relative ellipsoid semi-axes (mean 1)
    rotation: np.ndarray  # (3, 3)
    roughness: float  # amplitude of the shape noise
    wm_preference: float  # how much oedema favours white matter
    mass_effect: float  # 0..0.6, peak pull-back fraction

    def as_dict(self) -> dict[str, object]:
        return {
            "centre_voxel": [round(float(c), 1) for c in self.centre],
            "radius_mm": round(self.radius, 1),
            "core_fraction": round(self.core_fraction, 3),
            "necrosis_fraction": round(self.necrosis_fraction, 3),
            "mass_effect": round(self.mass_effect, 3),
        }


def sample_tumour(rng: np.random.Generator, centre: np.ndarray) -> TumourSpec:
    """Draw a tumour around ``centre``: radius 9-40 mm, log-uniform, so small ones are common."""
    radius = float(np.exp(rng.uniform(np.log(9.0), np.log(40.0))))
    axes = np.exp(rng.uniform(-0.25, 0.25, size=3))
    axes /= np.cbrt(np.prod(axes))
    q = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    size = min(1.0, radius / 30.0)
    return TumourSpec(
        centre=np.asarray(centre, float),
        radius=radius,
        core_fraction=float(rng.uniform(0.25, 0.6)),
        necrosis_fraction=float(rng.uniform(0.3, 0.7)),
        axes=axes,
        rotation=q,
        roughness=float(rng.uniform(0.2, 0.5)),
        wm_preference=float(rng.uniform(0.1, 0.5)),
        mass_effect=float(rng.uniform(0.15, 0.6) * size),
    )


def tumour_box(spec: TumourSpec, shape: tuple[int, ...], scale: float = 1.6) -> tuple[slice, ...]:
    """The region (clipped to ``shape``) where the tumour or its mass effect can reach."""
    reach = spec.radius * float(spec.axes.max()) * scale + 4
    return tuple(
        slice(max(0, int(np.floor(c - reach))), min(n, int(np.ceil(c + reach)) + 1))
        for c, n in zip(spec.centre, shape)
    )


def mass_effect_displacement(
    spec: TumourSpec, box: tuple[slice, ...]
) -> np.ndarray:
    """Pull-back displacement (3, *box) that pushes tissue radially away from the centre.

    A voxel at radius r shows the tissue from radius r (1 - a exp(-r^2 / R^2)): monotone for
    a < 1, so tissue is compressed around the tumour but never folded.
    """
    grids = np.ogrid[box]
    rel = [g.astype(np.float32) - np.float32(c) for g, c in zip(grids, spec.centre)]
    r2 = rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2
    factor = -np.float32(spec.mass_effect) * np.exp(-r2 / np.float32(spec.radius**2 * 1.2))
    return np.stack([np.broadcast_to(factor * r, r2.shape) for r in rel]).astype(np.float32)


def tumour_labels(
    rng: np.random.Generator,
    spec: TumourSpec,
    box: tuple[slice, ...],
    white_matter: np.ndarray,
    brain: np.ndarray,
) -> np.ndarray:
    """BraTS labels (uint8) inside ``box``; ``white_matter`` and ``brain`` are given for the box.

    Nested level sets of one lobulated field: necrosis inside the enhancing core inside oedema.
    Each compartment is guaranteed at least a thin layer, so every tumour case has labels 1, 2, 4.
    """
    from scipy import ndimage

    shape = white_matter.shape
    grids = np.ogrid[box]
    rel = [g.astype(np.float32) - np.float32(c) for g, c in zip(grids, spec.centre)]
    # Ellipsoidal distance in the tumour's own frame, in units of the whole-tumour radius.
    rot = spec.rotation.astype(np.float32)
    dist2 = np.zeros(shape, np.float32)
    for k in range(3):
        along = rot[0, k] * rel[0] + rot[1, k] * rel[1] + rot[2, k] * rel[2]
        dist2 += (along / np.float32(spec.axes[k])) ** 2
    dist = np.sqrt(dist2) / np.float32(spec.radius)

    def lobulated(sigma_mm: float, amplitude: float) -> np.ndarray:
        noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_mm)
        noise /= max(float(noise.std()), 1e-6)
        return np.float32(amplitude) * noise

    wm_bias = np.float32(spec.wm_preference) * (white_matter - np.float32(0.5))
    whole_field = 1.0 - dist + lobulated(max(2.0, spec.radius / 4), spec.roughness) + wm_bias
    core_r = spec.core_fraction
    core_field = core_r - dist + lobulated(max(1.5, spec.radius * core_r / 3), spec.roughness * core_r)
    nec_r = core_r * spec.necrosis_fraction
    nec_field = nec_r - dist + lobulated(max(1.5, spec.radius * nec_r / 3), spec.roughness * nec_r)

    # Nest and guarantee each compartment: a voxel ball at the centre, then 2-voxel shells.
    centre_idx = tuple(int(round(c - s.start)) for c, s in zip(spec.centre, box))
    necrosis = nec_field > 0
    necrosis[centre_idx] = True
    necrosis = ndimage.binary_dilation(necrosis, iterations=1) & brain
    core = ((core_field > 0) & brain) | ndimage.binary_dilation(necrosis, iterations=2)
    whole = ((whole_field > 0) & brain) | ndimage.binary_dilation(core, iterations=2)
    whole &= brain | core
    # Keep one connected tumour (noise can split off islands).
    components, n = ndimage.label(whole)
    if n > 1:
        keep = components[centre_idx]
        whole = components == keep
    labels = np.zeros(shape, np.uint8)
    labels[whole] = OEDEMA
    labels[core & whole] = ENHANCING
    labels[necrosis & whole] = NECROSIS
    return labels
