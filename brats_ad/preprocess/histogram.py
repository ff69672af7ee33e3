"""Nyul-style histogram standardisation: piecewise-linear landmark matching per modality.

Nyul, Udupa & Zhang (2000), "New variants of a method of MRI scale standardization",
IEEE TMI 19(2):143-150, doi:10.1109/42.836373. Kept simple: landmarks are brain-voxel
percentiles; each scan's landmarks are mapped linearly onto the learned standard ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from brats_ad.data.scan import Scan, canonical_modality
from brats_ad.errors import ConfigError, DataError
from brats_ad.preprocess.base import brain_mask_of, check_scan, with_step

DEFAULT_PERCENTILES: tuple[float, ...] = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)


class HistogramStandardise:
    """Map each channel's brain percentiles onto standard landmarks (piecewise linear).

    ``landmarks`` is a JSON file path or a dict ``{modality: [standard values]}`` with one value
    per percentile in ``percentiles``; make one with ``HistogramStandardise.fit(scans).save(path)``.
    Values beyond the end landmarks extend the end segments linearly; non-brain voxels get
    ``background``. Channels without landmarks are an error (say which modalities exist).
    """

    name = "histogram-standardise"

    def __init__(
        self,
        landmarks: str | Mapping[str, Sequence[float]] | None = None,
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
        background: float = 0.0,
    ) -> None:
        self.percentiles = tuple(float(p) for p in percentiles)
        if len(self.percentiles) < 2 or list(self.percentiles) != sorted(set(self.percentiles)) or not (
            0.0 <= self.percentiles[0] and self.percentiles[-1] <= 100.0
        ):
            raise ConfigError(
                f"histogram-standardise: percentiles must be >= 2 increasing values in [0, 100], got {percentiles!r}"
            )
        self.background = float(background)
        if landmarks is None:
            raise ConfigError(
                "histogram-standardise: needs landmarks (a JSON file or {modality: [values]}); "
                "learn them with HistogramStandardise.fit(scans).save('landmarks.json')"
            )
        if isinstance(landmarks, (str, Path)):  # read once here, never in __call__
            try:
                landmarks = json.loads(Path(landmarks).read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"histogram-standardise: cannot read landmarks file {landmarks}: {exc}") from None
        self.landmarks: dict[str, np.ndarray] = {}
        for modality, values in dict(landmarks).items():
            arr = np.asarray(values, dtype=float)
            if arr.shape != (len(self.percentiles),) or np.any(np.diff(arr) <= 0):
                raise ConfigError(
                    f"histogram-standardise: landmarks for {modality!r} must be {len(self.percentiles)} "
                    f"increasing values (one per percentile), got {values!r}"
                )
            self.landmarks[canonical_modality(modality)] = arr

    @classmethod
    def fit(
        cls,
        scans: Iterable[Scan],
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
        scale: tuple[float, float] = (0.0, 100.0),
        background: float = 0.0,
    ) -> "HistogramStandardise":
        """Learn standard landmarks: each scan's first/last landmark mapped to ``scale``, averaged."""
        pcts = tuple(float(p) for p in percentiles)
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        for scan in scans:
            mask = brain_mask_of(scan)
            for modality, channel in zip(scan.modalities, scan.image):
                values = channel[mask]
                if values.size == 0:
                    continue
                marks = np.percentile(values, pcts)
                if marks[-1] - marks[0] <= 0:
                    continue  # a constant channel carries no shape information
                mapped = scale[0] + (marks - marks[0]) * (scale[1] - scale[0]) / (marks[-1] - marks[0])
                key = canonical_modality(modality)
                sums[key] = sums.get(key, 0.0) + mapped
                counts[key] = counts.get(key, 0) + 1
        if not sums:
            raise DataError("histogram-standardise: fit got no scans with non-constant brain voxels; pass training scans")
        # Averages of increasing sequences are increasing only weakly (ties): force strict order.
        landmarks = {}
        for key in sums:
            avg = sums[key] / counts[key]
            landmarks[key] = np.maximum.accumulate(avg + np.arange(avg.size) * 1e-6).tolist()
        return cls(landmarks=landmarks, percentiles=pcts, background=background)

    def save(self, path: str | Path) -> Path:
        """Write the landmarks as JSON (load them with ``landmarks=path``)."""
        path = Path(path)
        path.write_text(json.dumps({k: v.tolist() for k, v in self.landmarks.items()}, indent=1) + "\n")
        return path

    def __call__(self, scan: Scan) -> Scan:
        check_scan(scan, self.name)
        mask = brain_mask_of(scan)
        out = np.full(scan.image.shape, self.background, dtype=np.float32)
        for c, modality in enumerate(scan.modalities):
            standard = self.landmarks.get(canonical_modality(modality))
            if standard is None:
                raise DataError(
                    f"case {scan.case_id!r}: histogram-standardise has no landmarks for {modality!r} "
                    f"(it has {', '.join(sorted(self.landmarks))}); fit them on scans with that modality"
                )
            values = scan.image[c][mask].astype(np.float64)
            if values.size == 0:
                continue
            marks = np.percentile(values, self.percentiles)
            marks = np.maximum.accumulate(marks + np.arange(marks.size) * 1e-9 * max(1.0, abs(marks).max()))
            out[c][mask] = _piecewise_linear(values, marks, standard)
        return with_step(scan, self.name, {"percentiles": list(self.percentiles)}, image=out, brain_mask=mask)


def _piecewise_linear(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """``np.interp`` with the end segments extended linearly instead of clamped."""
    y = np.interp(x, xp, fp)
    lo, hi = x < xp[0], x > xp[-1]
    y[lo] = fp[0] + (x[lo] - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0])
    y[hi] = fp[-1] + (x[hi] - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    return y


