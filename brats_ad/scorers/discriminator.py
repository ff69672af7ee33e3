"""``discriminator``: AnoGAN's discrimination loss, the residual of discriminator features.

Schlegl et al. (2017, IPMI, doi:10.1007/978-3-319-59050-9_12; 2019, MedIA,
doi:10.1016/j.media.2019.01.010) score a sample by how differently the discriminator sees
``x`` and its reconstruction ``x'``: ``mean |f(x) - f(x')|`` over feature elements (L1; ``power=2``
gives f-AnoGAN's squared version).

Map (``map_kind = "constant"``): the sample score broadcast over the sample. The features are the
discriminator's last feature map (4 x 4[ x 4] for the built-in GANs), whose receptive fields each
cover most of the input: upsampling that grid to voxels would suggest a localisation the
features do not have, so the map is constant per sample (patch-wise after stitching).
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

from brats_ad.models.output import ModelOutput
from brats_ad.scorers.common import MapScorer, broadcast, check_power, same_shape


class DiscriminatorFeatures(MapScorer):
    """Per-sample feature residual ``mean |f(x) - f(x')| ** power``, as a constant map."""

    name = "discriminator"
    requires = frozenset({"disc_features"})
    map_kind = "constant"

    def __init__(self, power: int = 1, postprocess: Mapping[str, Any] | None = None) -> None:
        super().__init__(postprocess)
        self.power = check_power(power, self.name)

    def feature_error(self, output: ModelOutput) -> Tensor:
        real, fake = output.disc_features_real, output.disc_features_fake
        same_shape(real, fake, self.name, "disc_features_real and disc_features_fake")
        diff = (real.float() - fake.float()).abs()
        if self.power == 2:
            diff = diff.square()
        return diff.flatten(1).mean(1)  # (B,)

    def anomaly_map(self, output: ModelOutput) -> Tensor:
        self.check(output)
        return broadcast(self.feature_error(output), output.x)

    def sample_score(self, amap: Tensor, output: ModelOutput) -> Tensor:
        return self.feature_error(output)
