"""Real anatomy for the synthetic cases: nilearn's MNI152 tissue maps, moved into BraTS space.

The MNI152 2009 templates ship inside nilearn's wheel (``nilearn/datasets/data``), so nothing is
downloaded. Each subject is the template pulled back through its own random affine, a smooth
elastic field and (when it has a tumour) a radial mass effect, sampled only where brain can land.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

#: BraTS 2021 grid: 240 x 240 x 155 voxels of 1 mm.
SHAPE: tuple[int, int, int] = (240, 240, 155)

#: BraTS 2021 / SRI24 affine: voxel axes point Left, Posterior, Superior (ITK's identity LPS).
AFFINE: np.ndarray = np.array(
    [[-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 239.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)

#: BraTS world (mm) + offset = MNI world (mm) for the mean subject: the brain is centred left-right
#: and front-back, the vertex sits near slice 144 and the lowest ~10 mm of brainstem are cut,
#: as in SRI24 where the field of view stops below the cerebellum.
_BRATS_TO_MNI_OFFSET = np.array([119.5, -136.5, -62.0])

#: Rotation centre of the subject transform (MNI mm, near the thalamus).
_MNI_CENTRE = np.array([0.0, -17.0, 5.0])

#: Channels stacked in :class:`Anatomy` (probabilities, except ``detail``).
CHANNELS: tuple[str, ...] = ("gm", "wm", "csf", "detail", "pv")


@dataclass(frozen=True)
class Anatomy:
    """Template channels in the MNI grid, plus what subject sampling needs.

    ``maps`` is (5, X, Y, Z) float32: grey matter, white matter, CSF (brain mask minus both),
    ``detail`` (template T1 minus what the three tissues predict: deep nuclei, fine structure)
    and ``pv`` (a periventricular halo, later a healthy FLAIR hyperintensity).
    """

    maps: np.ndarray
    affine: np.ndarray  # MNI voxel -> MNI mm
    support: np.ndarray  # (X, Y, Z) bool: brain dilated by 2 voxels
    tumour_sites: np.ndarray  # (N, 3) MNI voxel indices deep in white matter
    box: tuple[slice, slice, slice]  # BraTS-grid region any subject's brain can reach


@functools.lru_cache(maxsize=1)
def load_anatomy() -> Anatomy:
    """Load and derive the template channels once per process (about 2 s plus nilearn's import)."""
    from nilearn import datasets  # slow import, and only needed here
    from scipy import ndimage

    t1_img = datasets.load_mni152_template(resolution=1)
    mask = np.asanyarray(datasets.load_mni152_brain_mask(resolution=1).dataobj) > 0
    gm = _as_array(datasets.load_mni152_gm_template(resolution=1)) * mask
    wm = _as_array(datasets.load_mni152_wm_template(resolution=1)) * mask
    t1 = _as_array(t1_img) * mask
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf = np.clip(mask - gm - wm, 0.0, 1.0).astype(np.float32)

    # Least-squares tissue means of the template T1; what they do not explain is "detail".
    inside = mask & (np.arange(mask.shape[0])[:, None, None] % 3 == 0)  # a subsample is enough
    design = np.stack([gm[inside], wm[inside], csf[inside]], axis=1)
    means, *_ = np.linalg.lstsq(design, t1[inside], rcond=None)
    predicted = gm * means[0] + wm * means[1] + csf * means[2]
    detail = ((t1 - predicted) / max(float(means[1]), 1e-6)) * mask  # relative to white matter

    depth = ndimage.distance_transform_edt(mask)
    ventricles = (csf > 0.5) & (depth > 18)
    halo = ndimage.gaussian_filter(ventricles.astype(np.float32), 2.5)
    pv = np.clip(halo / max(float(halo.max()), 1e-6) * 2.0, 0.0, 1.0) * wm

    maps = np.stack([gm, wm, csf, detail, pv]).astype(np.float32)
    support = ndimage.binary_dilation(mask, iterations=2)
    # Gliomas in BraTS are mostly supratentorial: sites in cerebral white matter (MNI z > -5 mm).
    above = np.arange(mask.shape[2]) * t1_img.affine[2, 2] + t1_img.affine[2, 3] > -5.0
    sites = np.argwhere((wm > 0.6) & (depth > 16) & above[None, None, :])
    box = _reachable_box(mask, t1_img.affine)
    return Anatomy(maps=maps, affine=t1_img.affine.copy(), support=support,
                   tumour_sites=sites, box=box)


def _as_array(img: object) -> np.ndarray:
    return np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float32)  # type: ignore[attr-defined]


def _reachable_box(mask: np.ndarray, mni_affine: np.ndarray) -> tuple[slice, slice, slice]:
    """Bounding box, in the BraTS grid, of the mean brain plus a margin for subject motion."""
    corners = np.argwhere(mask)
    lo, hi = corners.min(0), corners.max(0)
    mni_mm = mni_affine[:3, :3] @ np.stack([lo, hi]).T + mni_affine[:3, 3:4]
    brats_mm = mni_mm - _BRATS_TO_MNI_OFFSET[:, None]
    vox = np.linalg.inv(AFFINE)[:3, :3] @ brats_mm + np.linalg.inv(AFFINE)[:3, 3:4]
    margin = 18  # covers rotation <= 6 deg, scale <= 6 %, shift <= 4 mm and elastic <= ~4 mm
    low = np.floor(vox.min(axis=1)).astype(int) - margin
    high = np.ceil(vox.max(axis=1)).astype(int) + margin + 1
    return tuple(  # type: ignore[return-value]
        slice(max(0, int(low[a])), min(SHAPE[a], int(high[a]))) for a in range(3)
    )


@dataclass(frozen=True)
class SubjectTransform:
    """Pull-back from the BraTS grid to MNI voxels: ``m = matrix @ (v + disp(v)) + offset``."""

    matrix: np.ndarray  # (3, 3)
    offset: np.ndarray  # (3,)

    def to_brats(self, mni_voxel: np.ndarray) -> np.ndarray:
        """Approximate inverse (ignores the elastic field): MNI voxel -> BraTS voxel."""
        return np.linalg.solve(self.matrix, np.asarray(mni_voxel, float) - self.offset)


def sample_subject_transform(rng: np.random.Generator, anatomy: Anatomy) -> SubjectTransform:
    """A random head pose and size: rotation up to ~5 deg per axis, scale +-5 %, shift +-3 mm."""
    angles = np.deg2rad(rng.uniform(-5.0, 5.0, size=3))
    scales = rng.uniform(0.95, 1.05, size=3) * rng.uniform(0.97, 1.03)  # global and per axis
    shift = rng.uniform(-3.0, 3.0, size=3)
    rot = _rotation(angles)
    # MNI mm = centre + R S (brats mm + offset - centre) + shift; the pull-back scales by 1/S.
    linear_mm = rot @ np.diag(1.0 / scales)
    to_mm = AFFINE[:3, :3]
    mni_inv = np.linalg.inv(anatomy.affine)
    matrix = mni_inv[:3, :3] @ linear_mm @ to_mm
    centre_term = _MNI_CENTRE + shift + linear_mm @ (AFFINE[:3, 3] + _BRATS_TO_MNI_OFFSET - _MNI_CENTRE)
    offset = mni_inv[:3, :3] @ centre_term + mni_inv[:3, 3]
    return SubjectTransform(matrix=matrix, offset=offset)


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def smooth_fields(
    rng: np.random.Generator, shape: tuple[int, ...], spacing: float, count: int
) -> np.ndarray:
    """``count`` smooth random fields of unit std over ``shape``, shape (count, *shape), float32.

    Gaussian noise on a coarse control grid, interpolated by a separable Gaussian kernel: three
    small matrix products instead of a full-resolution filter or zoom (10x faster, same result).
    """
    coarse = [int(np.ceil(n / spacing)) + 3 for n in shape]
    values = rng.standard_normal((count, *coarse))
    mats = [_kernel_matrix(n, c, spacing) for n, c in zip(shape, coarse)]
    out = np.einsum("kabc,xa,yb,zc->kxyz", values, *mats, optimize=True).astype(np.float32)
    std = out.reshape(count, -1).std(axis=1)
    out /= np.maximum(std, 1e-6)[:, None, None, None]
    return out


def _kernel_matrix(n: int, coarse: int, spacing: float) -> np.ndarray:
    """(n, coarse) rows of normalised Gaussian weights from control points to voxels."""
    nodes = (np.arange(coarse) - 1.0) * spacing  # one control point beyond each edge
    x = np.arange(n, dtype=float)[:, None]
    w = np.exp(-0.5 * ((x - nodes[None, :]) / (0.8 * spacing)) ** 2)
    return w / w.sum(axis=1, keepdims=True)


def pull_back(
    anatomy: Anatomy,
    transform: SubjectTransform,
    displacement: np.ndarray,
    box_origin: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample every template channel for the box; returns (maps (C, *box), inside (box) bool).

    ``displacement`` (3, *box) holds, per BraTS voxel of the box, where (relative to itself, in
    voxels) the tissue it shows comes from, before the subject transform.
    """
    from scipy import ndimage

    box_shape = displacement.shape[1:]
    grids = np.ogrid[tuple(slice(0, n) for n in box_shape)]
    src = [displacement[a] + np.float32(box_origin[a]) + grids[a].astype(np.float32) for a in range(3)]
    m = transform.matrix.astype(np.float32)
    o = transform.offset.astype(np.float32)
    coords = np.stack([m[k, 0] * src[0] + m[k, 1] * src[1] + m[k, 2] * src[2] + o[k] for k in range(3)])
    # Only voxels that land on (dilated) brain need interpolating: about half of the box.
    limits = np.array(anatomy.support.shape)[:, None] - 1
    nearest = np.clip(np.rint(coords.reshape(3, -1)), 0, limits).astype(np.intp)
    inside = anatomy.support[nearest[0], nearest[1], nearest[2]].reshape(box_shape)
    points = coords[:, inside]
    maps = np.zeros((anatomy.maps.shape[0], *box_shape), np.float32)
    for c in range(anatomy.maps.shape[0]):
        maps[c][inside] = ndimage.map_coordinates(
            anatomy.maps[c], points, order=1, mode="constant", cval=0.0, output=np.float32
        )
    return maps, inside
