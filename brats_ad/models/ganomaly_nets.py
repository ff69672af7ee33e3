"""GANomaly's networks (Akcay et al. 2018), N-dimensional: DCGAN encoder, decoder, generator
(encoder -> decoder -> encoder) and discriminator (an encoder whose 1-channel head is the
real/fake classifier and whose body yields the features of the adversarial loss).

Written from the paper and the reference implementation's architecture; the module order
follows anomalib's ``GanomalyModel`` so the paper configuration maps one to one onto it (the
parity tests load anomalib's weights by position). Geometry: a stride-2 stem, then
``log2(image_size) - 3`` stride-2 pyramid convolutions down to a 4^d map, then a 4^d head
convolution down to 1^d; the decoder mirrors it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from brats_ad.models.layers import batchnorm_for, conv_for, conv_transpose_for

__all__ = [
    "Decoder",
    "Discriminator",
    "DiscriminatorOutput",
    "Encoder",
    "Generator",
    "GeneratorOutput",
    "encoder_sizes",
    "pyramid_depth",
]

_SLOPE = 0.2  # LeakyReLU slope of DCGAN discriminators/encoders


def pyramid_depth(image_size: int) -> int:
    """Number of stride-2 pyramid layers between the stem and the 4^d map (as anomalib)."""
    return max(int(image_size).bit_length() - 1 - 3, 0)  # log2(image_size) - 3


def encoder_sizes(image_size: int, initial_padding: int) -> list[int]:
    """Edge length after the stem and after each pyramid layer (the last one feeds the head)."""
    size = (image_size + 2 * initial_padding - 4) // 2 + 1  # stem: k4 s2 p=initial_padding
    sizes = [size]
    for _ in range(pyramid_depth(image_size)):
        size = (size + 2 - 4) // 2 + 1  # k4 s2 p1
        sizes.append(size)
    return sizes


class GeneratorOutput(NamedTuple):
    reconstruction: Tensor  # (B, C, *spatial) x' = G_D(G_E(x)), tanh range
    latent_in: Tensor  # (B, L, 1, 1[, 1]) z = G_E(x)
    latent_out: Tensor  # (B, L, 1, 1[, 1]) z' = E(x')


class DiscriminatorOutput(NamedTuple):
    logit: Tensor  # (B,) real-vs-fake logit (the sigmoid is applied by the loss)
    features: Tensor  # (B, width * 2**depth, 4, 4[, 4]) the body's last feature map

    @property
    def prediction(self) -> Tensor:
        """Probability that the input is real, ``sigmoid(logit)`` (anomalib's ``pred``)."""
        return torch.sigmoid(self.logit)


class Encoder(nn.Module):
    """DCGAN encoder ``(B, C, *[N]*d) -> (B, latent_size, *[1]*d)``.

    ``body`` (stem, extra layers, pyramid) ends in a 4^d map; ``head`` is the k4 convolution to
    the latent vector. Convolutions carry no bias (batch norm follows, as in DCGAN).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        image_size: int,
        latent_size: int,
        width: int,
        extra_layers: int = 0,
        initial_padding: int = 4,
    ) -> None:
        super().__init__()
        conv, norm = conv_for(spatial_dims), batchnorm_for(spatial_dims)
        layers: list[nn.Module] = [
            conv(in_channels, width, 4, stride=2, padding=initial_padding, bias=False),
            nn.LeakyReLU(_SLOPE, inplace=True),
        ]
        for _ in range(extra_layers):
            layers += [conv(width, width, 3, stride=1, padding=1, bias=False), norm(width),
                       nn.LeakyReLU(_SLOPE, inplace=True)]
        channels = width
        for _ in range(pyramid_depth(image_size)):
            layers += [conv(channels, 2 * channels, 4, stride=2, padding=1, bias=False),
                       norm(2 * channels), nn.LeakyReLU(_SLOPE, inplace=True)]
            channels *= 2
        self.body = nn.Sequential(*layers)
        self.out_features = channels
        self.head = conv(channels, latent_size, 4, stride=1, padding=0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))  # (B, latent, *[1]*d)


class Decoder(nn.Module):
    """DCGAN decoder ``(B, latent_size, *[1]*d) -> (B, C, *[N]*d)`` in [-1, 1] (tanh)."""

    def __init__(
        self,
        spatial_dims: int,
        out_channels: int,
        image_size: int,
        latent_size: int,
        width: int,
        extra_layers: int = 0,
    ) -> None:
        super().__init__()
        conv, convt = conv_for(spatial_dims), conv_transpose_for(spatial_dims)
        norm = batchnorm_for(spatial_dims)
        channels = width * 2 ** pyramid_depth(image_size)
        layers: list[nn.Module] = [
            convt(latent_size, channels, 4, stride=1, padding=0, bias=False),  # 1^d -> 4^d
            norm(channels),
            nn.ReLU(inplace=True),
        ]
        for _ in range(pyramid_depth(image_size)):
            layers += [convt(channels, channels // 2, 4, stride=2, padding=1, bias=False),
                       norm(channels // 2), nn.ReLU(inplace=True)]
            channels //= 2
        for _ in range(extra_layers):  # LeakyReLU here, as anomalib (the parity reference)
            layers += [conv(channels, channels, 3, stride=1, padding=1, bias=False), norm(channels),
                       nn.LeakyReLU(_SLOPE, inplace=True)]
        layers += [convt(channels, out_channels, 4, stride=2, padding=1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class Generator(nn.Module):
    """Encoder G_E -> decoder G_D -> encoder E (same architecture, separate weights)."""

    def __init__(self, spatial_dims: int, in_channels: int, image_size: int, latent_size: int,
                 width: int, extra_layers: int = 0, initial_padding: int = 4) -> None:
        super().__init__()
        enc = (spatial_dims, in_channels, image_size, latent_size, width, extra_layers, initial_padding)
        self.encoder_in = Encoder(*enc)
        self.decoder = Decoder(spatial_dims, in_channels, image_size, latent_size, width, extra_layers)
        self.encoder_out = Encoder(*enc)

    def forward(self, x: Tensor) -> GeneratorOutput:
        z = self.encoder_in(x)  # (B, L, *[1]*d)
        x_rec = self.decoder(z)  # (B, C, *spatial)
        return GeneratorOutput(x_rec, z, self.encoder_out(x_rec))


class Discriminator(nn.Module):
    """An :class:`Encoder` with a 1-channel head: the body's map is D's feature output."""

    def __init__(self, spatial_dims: int, in_channels: int, image_size: int, width: int,
                 extra_layers: int = 0, initial_padding: int = 4) -> None:
        super().__init__()
        self.encoder = Encoder(spatial_dims, in_channels, image_size, 1, width, extra_layers,
                               initial_padding)

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        features = self.encoder.body(x)  # (B, F, *[4]*d)
        logit = self.encoder.head(features).reshape(x.shape[0])  # (B,)
        return DiscriminatorOutput(logit, features)
