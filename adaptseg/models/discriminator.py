"""AdaptSegNet's fully-convolutional discriminator (``model/discriminator.py``)."""

from __future__ import annotations

import math
import re
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

MIN_INPUT_SIZE = 32  # five stride-2 4x4 convs (padding 1) leave a 1x1 map from 32x32
# Earlier versions of this project named the four convolutions features.0/2/4/6.
_OLD_NAME = re.compile(r"^(.*)features\.(0|2|4|6)\.(weight|bias)$")


class FCDiscriminator(nn.Module):
    """Five 4x4 stride-2 convs (LeakyReLU 0.2 between them), raw logits out at 1/32 size.

    No normalisation and no sigmoid (the loss applies it), and no final upsampling: the paper's
    text mentions one, the released code has none (AdaptSegNet issues #37, #82). The modules
    carry the official names (``conv1`` ... ``conv4``, ``classifier``), so a D snapshot of the
    official training script (``*_D1.pth``, ``*_D2.pth``) loads as it is; a state dict in this
    project's former layout (``features.0`` ... ``features.6``) loads too.
    """

    def __init__(self, num_classes: int = 19, ndf: int = 64) -> None:
        """``num_classes`` is D's input channel count: the classes for output-space adaptation,
        the feature channels (e.g. 2048 for ResNet-101's conv5) for feature-level adaptation."""
        super().__init__()
        self.conv1 = nn.Conv2d(num_classes, ndf, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(ndf, ndf * 2, 4, stride=2, padding=1)
        self.conv3 = nn.Conv2d(ndf * 2, ndf * 4, 4, stride=2, padding=1)
        self.conv4 = nn.Conv2d(ndf * 4, ndf * 8, 4, stride=2, padding=1)
        self.classifier = nn.Conv2d(ndf * 8, 1, 4, stride=2, padding=1)
        self.leaky_relu = nn.LeakyReLU(0.2, inplace=True)
        self._register_load_state_dict_pre_hook(_rename_old_keys)

    def forward(self, probabilities: Tensor) -> Tensor:
        """(N, C, H, W) class probabilities -> (N, 1, H/32, W/32) logits (1 = target)."""
        x = probabilities
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = self.leaky_relu(conv(x))
        return self.classifier(x)


def _rename_old_keys(state: dict[str, Any], prefix: str, *args: Any) -> None:
    for key in [k for k in state if k.startswith(prefix)]:
        found = _OLD_NAME.match(key)
        if found:
            index = int(found.group(2)) // 2 + 1
            state[f"{found.group(1)}conv{index}.{found.group(3)}"] = state.pop(key)


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
