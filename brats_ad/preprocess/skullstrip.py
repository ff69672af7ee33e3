"""Weight-free skull stripping: register the head to a with-skull template, carry its brain mask back.

No network weights to download: a small 2 mm T1 head template and its soft brain mask ship in
``brats_ad/preprocess/templates`` (made by ``scripts/make_template.py``; MNI/Collins notice in
``copyright.md`` there). The head is registered rigidly, then affinely (12 parameters), to the
template with mutual information, so any T1-like contrast works.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from brats_ad.data.scan import Scan
from brats_ad.errors import ConfigError, DataError
from brats_ad.preprocess.base import affine_list, check_scan, modality_index, with_step

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_HEAD, _BRAIN, _GRID = "t1_head_2mm.nii.gz", "brain_fraction_2mm.nii.gz", "grid.json"


class SkullStrip:
    """Brain mask from an atlas registration; non-brain voxels are set to 0 (BraTS convention).

    ``space="native"`` keeps the subject grid and carries the template mask over.
    ``space="template"`` resamples every channel (linear; seg/mask nearest) into the template's
    1 mm BraTS grid (240 x 240 x 155), so healthy controls line up with BraTS cases; the new
    affine maps those voxels into the *subject's* world (so anomaly maps can be resampled back
    onto the input scan), and ``meta`` keeps the template grid's own affine.
    The soft template mask is interpolated and thresholded at ``threshold``; ``refine`` then
    fills holes and keeps the largest connected component.
    """

    name = "skullstrip"

    def __init__(
        self,
        reference: str = "t1",
        space: str = "native",
        template: str | None = None,
        threshold: float = 0.5,
        refine: bool = False,
        iterations: int = 150,
        sampling: float = 0.2,
        seed: int = 0,
        threads: int = 1,
    ) -> None:
        import nibabel as nib

        from brats_ad.data.scan import canonical_modality

        self.reference = canonical_modality(reference)
        if space not in ("native", "template"):
            raise ConfigError(f"skullstrip: space must be 'native' or 'template', got {space!r}")
        self.space = space
        if not 0.0 < float(threshold) < 1.0:
            raise ConfigError(f"skullstrip: threshold must be in (0, 1), got {threshold!r}")
        self.threshold = float(threshold)
        self.refine = bool(refine)
        if int(iterations) < 1:
            raise ConfigError(f"skullstrip: iterations must be >= 1, got {iterations!r}")
        self.iterations = int(iterations)
        if not 0.0 < float(sampling) <= 1.0:
            raise ConfigError(f"skullstrip: sampling must be a fraction in (0, 1], got {sampling!r}")
        self.sampling, self.seed, self.threads = float(sampling), int(seed), max(1, int(threads))
        self.template = template
        folder = Path(template) if template is not None else TEMPLATE_DIR
        missing = [n for n in (_HEAD, _BRAIN, _GRID) if not (folder / n).is_file()]
        if missing:
            raise ConfigError(
                f"skullstrip: template folder {folder} lacks {', '.join(missing)}; "
                "make one with scripts/make_template.py or leave template unset"
            )
        # File I/O belongs here, not in __call__: the template is read once per pipeline.
        head = nib.load(str(folder / _HEAD))
        brain = nib.load(str(folder / _BRAIN))
        self._head = (np.asarray(head.dataobj, dtype=np.float32), head.affine)
        self._brain = (np.asarray(brain.dataobj, dtype=np.float32) / 255.0, brain.affine)
        grid = json.loads((folder / _GRID).read_text())
        self._grid = (tuple(int(n) for n in grid["shape"]), np.asarray(grid["affine"], dtype=float))

    def __call__(self, scan: Scan) -> Scan:
        import SimpleITK as sitk

        from brats_ad.preprocess import _sitk

        check_scan(scan, self.name)
        ref = modality_index(scan, self.reference, self.name)
        subject = _sitk.shrink_to(_sitk.to_sitk(scan.image[ref], scan.affine), 2.0)
        template = _sitk.to_sitk(*self._head)
        transform = self._register(subject, template)  # subject point -> template point
        if self.space == "native":
            grid = _sitk.reference_grid(scan.spatial_shape, scan.affine)
            fraction = _sitk.resample_array(*self._brain, grid, transform)
            mask = self._mask(fraction, scan)
            image = np.where(mask, scan.image, 0).astype(np.float32)
            changes = {"image": image, "brain_mask": mask}
            new_affine = np.asarray(scan.affine, dtype=float)
        else:
            shape, new_affine = self._grid
            grid = _sitk.reference_grid(shape, new_affine)
            inverse = transform.GetInverse()  # template point -> subject point
            fraction = _sitk.resample_array(*self._brain, grid, sitk.Transform())
            mask = self._mask(fraction, scan)
            image = np.stack(
                [_sitk.resample_array(ch, scan.affine, grid, inverse) for ch in scan.image]
            )
            image = np.where(mask, image, 0).astype(np.float32)
            seg = None
            if scan.seg is not None:
                seg = _sitk.resample_array(scan.seg, scan.affine, grid, inverse, nearest=True)
                seg = seg.astype(np.asarray(scan.seg).dtype)
            # The voxels now follow the template grid, but the affine keeps pointing into the
            # subject's world (template world -> subject world), so maps go back exactly.
            to_template = _LPS @ np.asarray(_matrix(transform)) @ _LPS  # RAS, subject -> template
            new_affine = np.linalg.solve(to_template, new_affine)
            changes = {"image": image, "brain_mask": mask, "seg": seg, "affine": new_affine}
        record = {
            "reference": scan.modalities[ref],
            "space": self.space,
            "template_grid_affine": affine_list(self._grid[1]),
            "affine_to_template": _matrix(transform),  # LPS, as SimpleITK reports it
            "brain_volume_ml": float(mask.sum() * abs(np.linalg.det(new_affine[:3, :3])) / 1000.0),
        }
        return with_step(scan, self.name, record, **changes)

    def _register(self, subject, template):  # noqa: ANN001, ANN202
        """Rigid then affine MI registration; returns the subject -> template transform."""
        import SimpleITK as sitk

        def method(shrink: Sequence[int]) -> sitk.ImageRegistrationMethod:
            reg = sitk.ImageRegistrationMethod()
            reg.SetNumberOfThreads(self.threads)
            reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
            reg.SetMetricSamplingStrategy(reg.RANDOM)
            # SimpleITK reads seed 0 as "use the wall clock": shift by one to stay reproducible.
            reg.SetMetricSamplingPercentage(self.sampling, self.seed + 1)
            reg.SetInterpolator(sitk.sitkLinear)
            reg.SetOptimizerAsRegularStepGradientDescent(
                learningRate=2.0, minStep=1e-3, numberOfIterations=self.iterations,
                relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6,
            )
            reg.SetOptimizerScalesFromPhysicalShift()
            reg.SetShrinkFactorsPerLevel(list(shrink))
            reg.SetSmoothingSigmasPerLevel([float(f - 1) for f in shrink])
            reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
            return reg

        # Centre of mass alignment copes with a different field of view (neck, shoulders).
        rigid = sitk.CenteredTransformInitializer(
            subject, template, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
        )
        reg = method((4, 2))
        reg.SetInitialTransform(rigid, inPlace=True)
        try:
            reg.Execute(subject, template)
            affine = sitk.AffineTransform(3)
            affine.SetMatrix(rigid.GetMatrix())
            affine.SetTranslation(rigid.GetTranslation())
            affine.SetCenter(rigid.GetCenter())
            reg = method((2, 1))
            reg.SetInitialTransform(affine, inPlace=True)
            reg.Execute(subject, template)
        except RuntimeError as exc:  # ITK raises when, e.g., too few samples overlap
            raise DataError(
                f"skullstrip: registration to the template failed ({str(exc).splitlines()[-1][:200]}); "
                "check that the reference modality is a T1-like head scan"
            ) from exc
        return affine

    def _mask(self, fraction: np.ndarray, scan: Scan) -> np.ndarray:
        mask = fraction >= self.threshold
        if self.refine and mask.any():
            from scipy import ndimage

            labels, n = ndimage.label(mask)
            if n > 1:
                sizes = np.bincount(labels.ravel())[1:]
                mask = labels == (1 + int(np.argmax(sizes)))
            mask = ndimage.binary_fill_holes(mask)
        if not mask.any():
            raise DataError(
                f"case {scan.case_id!r}: skullstrip found no brain after registration; check that "
                f"{self.reference!r} is a head scan in a sensible orientation"
            )
        return mask


def _matrix(transform) -> list[list[float]]:  # noqa: ANN001
    """The 4x4 (LPS, physical) matrix of an affine SimpleITK transform, for the record."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(transform.GetMatrix()).reshape(3, 3)
    center = np.asarray(transform.GetCenter())
    m[:3, 3] = np.asarray(transform.GetTranslation()) + center - m[:3, :3] @ center
    return affine_list(m)
