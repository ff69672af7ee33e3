"""Built-in preprocessing steps, registered through the same hook third parties use."""

from __future__ import annotations

from brats_ad.plugins import hookimpl
from brats_ad.registry import Registry

_P = "brats_ad.preprocess"


@hookimpl
def brats_ad_register_preprocessors(registry: Registry) -> None:
    registry.add(
        "orient", f"{_P}.orient:Orient",
        help="flip/transpose voxel axes to canonical RAS (no interpolation)",
        params={"axcodes": "RAS"},
    )
    registry.add(
        "resample", f"{_P}.resample:Resample",
        help="resample to a voxel spacing in mm (linear images, nearest masks); no-op if already there",
        params={"spacing": (1.0, 1.0, 1.0), "tolerance": 1e-3},
    )
    registry.add(
        "coregister", f"{_P}.coregister:Coregister",
        help="rigid (Euler3D) Mattes-MI registration of every modality to a reference (SimpleITK)",
        params={"reference": "t1", "shrink": (4, 2), "iterations": 100, "sampling": 0.1,
                "bins": 32, "seed": 0, "threads": 1},
    )
    registry.add(
        "skullstrip", f"{_P}.skullstrip:SkullStrip",
        help="atlas skull stripping: affine MI registration to a shipped with-skull T1 template; "
        "space='template' resamples into the 240x240x155 BraTS grid",
        params={"reference": "t1", "space": "native", "template": None, "threshold": 0.5,
                "refine": False, "iterations": 150, "sampling": 0.2, "seed": 0, "threads": 1},
    )
    registry.add(
        "zscore", f"{_P}.intensity:ZScore",
        help="per channel (x - mean) / std over brain voxels; background set to a constant",
        params={"background": 0.0},
    )
    registry.add(
        "median-scale", f"{_P}.intensity:MedianScale",
        help="per channel 2x/(scale*brain median) - 1 (background -1, median 0, no clipping; compress: "
        "values above knee squeezed below +1); tumour-independent, so pooled thresholds work (default)",
        params={"scale": 2.0, "compress": False, "knee": 0.8, "background": -1.0},
    )
    registry.add(
        "percentile-scale", f"{_P}.intensity:PercentileScale",
        help="clip to brain percentiles and scale to [-1, 1]; background -1",
        params={"lower": 0.5, "upper": 99.5, "background": -1.0},
    )
    registry.add(
        "histogram-standardise", f"{_P}.histogram:HistogramStandardise",
        help="Nyul piecewise-linear landmark standardisation (landmarks from HistogramStandardise.fit)",
        params={"landmarks": None,
                "percentiles": (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0),
                "background": 0.0},
    )
    registry.add(
        "crop-pad", f"{_P}.crop:CropPad",
        help="crop to the brain box + margin and centre in a fixed shape; box recorded in meta",
        params={"shape": (192, 192, 160), "margin": 4, "pad_value": "background"},
    )
