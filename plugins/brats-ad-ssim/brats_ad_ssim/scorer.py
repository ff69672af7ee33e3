"""``ssim``: a structural anomaly map, ``1 - SSIM(x, x')`` per voxel.

Structural similarity (Wang et al. 2004, IEEE TIP 13(4):600-612, doi:10.1109/TIP.2003.819861)
compares local means, variances and covariance in a Gaussian window instead of single voxels,
so a reconstruction that is blurry everywhere scores lower than one that invents or deletes a
structure (Bergmann et al. 2019, VISAPP, used it for anomaly maps). 2D and 3D alike.

MONAI's ``compute_ssim_and_cs`` returns the per-voxel SSIM map but with a "valid" convolution
(the map shrinks by ``kernel_size - 1``); padding both images by ``kernel_size // 2`` with
replicated borders first makes the map voxel-aligned with the input, as a scorer must be.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from monai.metrics import compute_ssim_and_cs
from torch import Tensor

from brats_ad.errors import ConfigError, DataError
from brats_ad.models.output import ModelOutput
from brats_ad.scorers.base import Score
from brats_ad.scorers.postprocess import PostProcess


class SSIMScorer:
    """``map = 1 - SSIM(x, x')`` (mean over channels), in ``[0, 2]``; sample score = mean over the brain.

    Parameters
    ----------
    kernel_size: width of the Gaussian window (odd), the same on every spatial axis.
    kernel_sigma: its standard deviation in voxels.
    data_range: the intensity range of the images (2.0 for brats-ad's [-1, 1] scaling).
    postprocess: brats-ad's common post-processing options (median filter, eroded brain mask).
    """

    requires = frozenset({"reconstruction"})
    map_kind = "voxel"

    def __init__(self, kernel_size: int = 11, kernel_sigma: float = 1.5, data_range: float = 2.0,
                 postprocess: Mapping[str, Any] | None = None) -> None:
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
            raise ConfigError(f"scorer 'ssim': kernel_size must be an odd integer >= 3, got {kernel_size!r}")
        if not kernel_sigma > 0:
            raise ConfigError(f"scorer 'ssim': kernel_sigma must be > 0, got {kernel_sigma!r}")
        if not data_range > 0:
            raise ConfigError(f"scorer 'ssim': data_range must be > 0 (2.0 for images in [-1, 1]), got {data_range!r}")
        self.kernel_size, self.kernel_sigma, self.data_range = kernel_size, float(kernel_sigma), float(data_range)
        self.postprocess = PostProcess.from_param(postprocess, scorer="ssim")

    def anomaly_map(self, output: ModelOutput) -> Tensor:
        """``(B, 1, *spatial)`` float32, voxel-aligned with ``output.x``."""
        if "reconstruction" not in output.provides():
            raise ConfigError(
                "scorer 'ssim' requires 'reconstruction' (ModelOutput.reconstruction) but the model "
                f"output provides only {sorted(output.provides()) or 'nothing'}; pair it with a model "
                "that provides 'reconstruction'"
            )
        x, rec = output.x.float(), output.reconstruction.float()
        if x.shape != rec.shape or x.dim() not in (4, 5):
            raise DataError(
                f"scorer 'ssim': expected x and reconstruction of the same shape (B, C, H, W[, D]), "
                f"got {tuple(x.shape)} and {tuple(rec.shape)}"
            )
        spatial_dims = x.dim() - 2
        pad = [self.kernel_size // 2] * (2 * spatial_dims)
        ssim, _ = compute_ssim_and_cs(
            F.pad(rec, pad, mode="replicate"), F.pad(x, pad, mode="replicate"),
            spatial_dims=spatial_dims, kernel_size=[self.kernel_size] * spatial_dims,
            kernel_sigma=[self.kernel_sigma] * spatial_dims, data_range=self.data_range,
        )  # (B, C, *spatial)
        return (1.0 - ssim).mean(1, keepdim=True)

    def sample_score(self, amap: Tensor, output: ModelOutput) -> Tensor:
        """Mean of the map over ``brain_mask`` (all voxels without one, or where it is empty)."""
        if output.brain_mask is None:
            return amap.flatten(1).mean(1)
        brain = output.brain_mask.to(device=amap.device, dtype=torch.bool).flatten(1)
        brain = brain | ~brain.any(1, keepdim=True)  # an empty mask (a slice above the brain): all voxels
        values = amap.flatten(1)
        return (values * brain).sum(1) / brain.sum(1)

    @torch.no_grad()  # a score is never trained through
    def __call__(self, output: ModelOutput) -> Score:
        amap = self.postprocess(self.anomaly_map(output), output.brain_mask)
        return Score(anomaly_map=amap, sample_score=self.sample_score(amap, output).float())
