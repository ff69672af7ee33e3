"""``latent``: GANomaly's own anomaly score, the encoder loss L_enc = ||z - z'||^2.

Akcay, Atapour-Abarghouei, Breckon (2018), "GANomaly: semi-supervised anomaly detection via
adversarial training", ACCV, doi:10.1007/978-3-030-20893-6_39: ``z = G_E(x)``, ``z' = E(G(x))``.

The score is the **mean** (not the sum) of the squared difference over latent elements, so it
matches ``Ganomaly.infer().image_score`` and does not grow with the latent size.

Map (``map_kind = "constant"``): the sample's score broadcast over the sample. For whole-slice
models this is one value per slice, so voxel metrics rank slices, not voxels: the leaderboard
states it. For patch models the volume inference stitches the per-patch values into a patch-wise
map.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

from brats_ad.models.output import ModelOutput
from brats_ad.scorers.common import MapScorer, broadcast, same_shape


def latent_error(output: ModelOutput, scorer: str = "latent") -> Tensor:
    """``mean((z - z')^2)`` over latent elements, per sample: ``(B,)`` float32."""
    z, z_out = output.latent_in, output.latent_out
    same_shape(z, z_out, scorer, "latent_in and latent_out")
    return (z.float() - z_out.float()).square().flatten(1).mean(1)


class Latent(MapScorer):
    """L_enc per sample, broadcast over the sample as a constant map."""

    name = "latent"
    requires = frozenset({"latent_pair"})
    map_kind = "constant"

    def __init__(self, postprocess: Mapping[str, Any] | None = None) -> None:
        super().__init__(postprocess)

    def anomaly_map(self, output: ModelOutput) -> Tensor:
        self.check(output)
        return broadcast(latent_error(output, self.name), output.x)

    def sample_score(self, amap: Tensor, output: ModelOutput) -> Tensor:
        """L_enc itself (post-processing of a constant map does not change it)."""
        return latent_error(output, self.name)
