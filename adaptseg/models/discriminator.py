"""AdaptSegNet's fully-convolutional discriminator (``model/discriminator.py``)."""

from __future__ import annotations

from torch import Tensor, nn


class FCDiscriminator(nn.Module):
    """Five 4x4 stride-2 convs (LeakyReLU 0.2 between them), raw logits out at 1/32 size.

    No normalisation and no sigmoid (the loss applies it), and no final upsampling: the paper's
    text mentions one, the released code has none (AdaptSegNet issues #37, #82).
    """

    def __init__(self, num_classes: int = 19, ndf: int = 64) -> None:
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
