"""MR contrasts from tissue maps: per-case tissue and tumour intensities, bias field and noise.

Intensities are relative to white matter (WM = 1) before a per-case scanner gain. The tumour
FLAIR contrast is drawn per case and is sometimes subtle, and healthy tissue has its own
hyperintensities (grey matter, periventricular caps), so a FLAIR threshold is good but not
perfect, as on real BraTS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")

# (low, high) uniform ranges relative to white matter, per modality:
# grey matter, CSF, detail gain (template T1 residual), periventricular gain,
# oedema peak, enhancing rim, necrosis (and T1ce vessel enhancement).
_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "t1": {"gm": (0.72, 0.82), "csf": (0.25, 0.38), "detail": (0.8, 1.2), "pv": (-0.08, 0.0),
           "oedema": (0.75, 0.92), "enhancing": (0.8, 0.95), "necrosis": (0.35, 0.6)},
    "t1ce": {"gm": (0.74, 0.84), "csf": (0.28, 0.42), "detail": (0.8, 1.2), "pv": (-0.08, 0.0),
             "oedema": (0.78, 0.95), "enhancing": (1.3, 1.9), "necrosis": (0.35, 0.6),
             "vessels": (0.4, 0.9)},
    "t2": {"gm": (1.25, 1.45), "csf": (2.4, 3.2), "detail": (-1.4, -0.9), "pv": (0.1, 0.35),
           "oedema": (1.6, 2.6), "enhancing": (1.3, 1.9), "necrosis": (2.0, 3.0)},
    "flair": {"gm": (1.12, 1.28), "csf": (0.28, 0.45), "detail": (-0.8, -0.4), "pv": (0.15, 0.55),
              "oedema": (1.3, 2.1), "enhancing": (1.2, 1.7), "necrosis": (0.9, 1.6)},
}

#: Typical white-matter level per modality in the written int16 files (BraTS-like magnitudes).
_GAIN = {"t1": (350.0, 900.0), "t1ce": (400.0, 1100.0), "t2": (250.0, 700.0), "flair": (200.0, 600.0)}


@dataclass(frozen=True)
class Contrast:
    """One case's intensities for one modality (relative to white matter) and scanner settings."""

    modality: str
    levels: dict[str, float]
    gain: float
    bias_amplitude: float
    noise: float  # Rician sigma relative to white matter
    oedema_floor: float  # oedema intensity at its outer edge, as a fraction of its peak excess

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.levels.items()} | {"gain": round(self.gain, 1)}


def sample_contrasts(rng: np.random.Generator) -> dict[str, Contrast]:
    """Draw every modality's contrast for one case (same draw order for every case)."""
    # One "how visible is this tumour" factor shared by T2 and FLAIR: subtle tumours are subtle
    # in both, as in low-grade or non-enhancing lesions.
    visibility = rng.uniform(0.0, 1.0)
    out = {}
    for modality in MODALITIES:
        levels = {}
        for name, (low, high) in _RANGES[modality].items():
            u = rng.uniform(0.0, 1.0)
            if name == "oedema" and modality in ("t2", "flair"):
                u = 0.7 * visibility + 0.3 * u
            levels[name] = low + (high - low) * u
        out[modality] = Contrast(
            modality=modality,
            levels=levels,
            gain=float(rng.uniform(*_GAIN[modality])),
            bias_amplitude=float(rng.uniform(0.03, 0.12)),
            noise=float(rng.uniform(0.015, 0.05)),
            oedema_floor=float(rng.uniform(0.35, 0.8)),
        )
    return out


def render(
    contrast: Contrast,
    maps: np.ndarray,
    texture: np.ndarray,
    tumour: dict[str, np.ndarray] | None,
) -> np.ndarray:
    """Noise-free intensity (relative to WM) of one modality from tissue and tumour maps.

    ``maps`` is (gm, wm, csf, detail, pv, ...) for a region; ``texture`` a unit-std smooth field;
    ``tumour`` holds soft compartment weights ``necrosis``, ``enhancing``, ``oedema`` (summing
    to at most 1), ``oedema_grade`` (1 next to the core, 0 at the edge) and ``texture``.
    """
    lv = contrast.levels
    gm, wm, csf, detail, pv = maps[:5]
    image = gm * np.float32(lv["gm"]) + wm + csf * np.float32(lv["csf"])
    image += detail * np.float32(lv["detail"]) + pv * np.float32(lv["pv"])
    if "vessels" in lv:  # enhancing sulcal vessels and choroid plexus: bright specks in CSF
        image += csf * np.clip(texture - np.float32(1.3), 0.0, 1.0) * np.float32(lv["vessels"])
    image *= 1.0 + np.float32(0.03) * texture
    if tumour is not None:
        floor = np.float32(contrast.oedema_floor)
        grade = floor + (1 - floor) * tumour["oedema_grade"]
        oedema = 1.0 + np.float32(lv["oedema"] - 1.0) * grade
        inside = tumour["necrosis"] + tumour["enhancing"] + tumour["oedema"]
        lesion = (
            tumour["necrosis"] * np.float32(lv["necrosis"])
            + tumour["enhancing"] * np.float32(lv["enhancing"])
            + tumour["oedema"] * oedema
        ) * (1.0 + np.float32(0.08) * tumour["texture"])
        image = image * (1.0 - inside) + lesion
    return np.maximum(image, 0.0)


def finish(
    rng: np.random.Generator, contrast: Contrast, image: np.ndarray, bias: np.ndarray, brain: np.ndarray
) -> np.ndarray:
    """Apply bias field, Rician noise, scanner gain and skull stripping; return int16."""
    values = image[brain] * bias[brain]
    sigma = np.float32(contrast.noise)
    real = values + sigma * rng.standard_normal(values.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(values.shape, dtype=np.float32)
    values = np.sqrt(real * real + imag * imag) * np.float32(contrast.gain)
    out = np.zeros(image.shape, np.int16)
    out[brain] = np.clip(np.rint(values), 1, np.iinfo(np.int16).max).astype(np.int16)
    return out
