"""AdaptSegNet's fully-convolutional discriminator (``model/discriminator.py``)."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

MIN_INPUT_SIZE = 32  # five stride-2 4x4 convs (padding 1) leave a 1x1 map from 32x32


class FCDiscriminator(nn.Module):
    """Five 4x4 stride-2 convs (LeakyReLU 0.2 between them), raw logits out at 1/32 size.

    No normalisation and no sigmoid (the loss applies it), and no final upsampling: the paper's
    text mentions one, the released code has none (AdaptSegNet issues #37, #82).
    """

    def __init__(self, num_classes: int = 19, ndf: int = 64) -> None:
        """``num_classes`` is D's input channel count: the classes for output-space adaptation,
        the feature channels (e.g. 2048 for ResNet-101's conv5) for feature-level adaptation."""
        super().__init__()
        widths = (num_classes, ndf, ndf * 2, ndf * 4, ndf * 8)
        layers: list[nn.Module] = []
        for in_channels, out_channels in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(ndf * 8, 1, 4, stride=2, padding=1)

    def forward(self, probabilities: Tensor) -> Tensor:
        """(N, C, H, W) class probabilities -> (N, 1, H/32, W/32) logits (1 = target)."""
        return self.classifier(self.features(probabilities))


def enlarge_to_min_size(x: Tensor, align_corners: bool, min_size: int = MIN_INPUT_SIZE) -> Tensor:
    """Bilinearly enlarge ``x`` so that its shorter side is at least ``min_size`` (aspect kept).

    A conv5 map at output stride 8 is smaller than 32x32 for inputs under 256x256; rather than
    crash (or give D an empty map), D then sees the map enlarged. Larger maps pass unchanged.
    """
    height, width = x.shape[-2:]
    if min(height, width) >= min_size:
        return x
    scale = min_size / min(height, width)
    size = (max(min_size, math.ceil(height * scale)), max(min_size, math.ceil(width * scale)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)
