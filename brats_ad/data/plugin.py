"""Built-in dataset plugins, registered through the same hook third parties use."""

from __future__ import annotations

from brats_ad.plugins import hookimpl
from brats_ad.registry import Registry

_ALL = ("t1", "t1ce", "t2", "flair")


@hookimpl
def brats_ad_register_datasets(registry: Registry) -> None:
    registry.add(
        "brats",
        "brats_ad.data.brats:BratsDataset",
        help="a folder of BraTS cases; 2021 and 2023+ naming detected; anomaly = seg > 0",
        params={"modalities": _ALL, "require_seg": False},
    )
    registry.add(
        "healthy",
        "brats_ad.data.healthy:HealthyDataset",
        help="healthy-control scans (IXI-like) found by a file pattern; registered, resampled "
        "and skull-stripped before use",
        params={
            "modalities": ("t1",),
            "pattern": "{subject}-{modality}.nii.gz",
            "modality_names": None,
            "on_missing": "error",
        },
    )
    registry.add(
        "synthetic",
        "brats_ad.data.synthetic:SyntheticDataset",
        help="embedded default: BraTS-2021-layout cases synthesised from nilearn's MNI152 anatomy",
        params={"modalities": _ALL, "cases": 24, "seed": 0, "healthy_fraction": 0.25, "progress": True},
    )
