"""DeepLab-v2 with a VGG-16 backbone, laid out as the official ``model/deeplab_vgg.py``.

torchvision's VGG-16 features without pool4 and pool5 (output stride 8), conv5_1..conv5_3
dilated by 2, then fc6 and fc7 as 3x3 convolutions with dilation 4 (512 -> 1024 -> 1024, ReLU
after each) and the DeepLab-v2 ASPP classifier on fc7's 1024 channels. Module names are the
official ones (``features.<i>``, ``classifier.conv2d_list.<i>``), so the released VGG
checkpoints load key for key. Single level: the official model has one head.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from torch import Tensor, nn
from torchvision.models import vgg16

from adaptseg.models.aspp import ClassifierModule

POOL4_INDEX = 23  # torchvision's vgg16().features[23]; the official model drops it and pool5
CONV5_TORCHVISION = (24, 26, 28)  # conv5_1..3 in torchvision's numbering
CONV5_OFFICIAL = (23, 25, 27)  # ... and in the official model's, once pool4 is gone
FC_CHANNELS = 1024
FC_LAYERS_FROM_END = (4, 2)  # fc6 and fc7 in `features`: conv, ReLU, conv, ReLU at the end


class DeeplabVGG(nn.Module):
    """``forward(x)`` returns ``(None, logits_main)`` at about 1/8 of the input size, like
    ``DeeplabMulti`` with ``multi_level=False``; ``return_features=True`` adds fc7's output."""

    feature_channels = {"main": FC_CHANNELS}

    def __init__(self, num_classes: int = 19, aspp_branches: int = 2) -> None:
        super().__init__()
        if aspp_branches not in (2, 4):
            raise ValueError(f"`aspp_branches` must be 2 or 4, got {aspp_branches!r}")
        layers = list(vgg16(weights=None).features.children())
        kept = layers[:POOL4_INDEX] + layers[POOL4_INDEX + 1 : 30]
        for index in CONV5_OFFICIAL:
            kept[index].dilation, kept[index].padding = (2, 2), (2, 2)
        fc6 = nn.Conv2d(512, FC_CHANNELS, 3, padding=4, dilation=4)
        fc7 = nn.Conv2d(FC_CHANNELS, FC_CHANNELS, 3, padding=4, dilation=4)
        fc_layers = [fc6, nn.ReLU(inplace=True), fc7, nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*kept, *fc_layers)
        self.classifier = ClassifierModule(FC_CHANNELS, num_classes, aspp_branches)
        self.backbone_name = "vgg16"
        self.multi_level = False

    def forward(
        self, x: Tensor, return_features: bool = False
    ) -> tuple[Tensor | None, Tensor] | tuple[Tensor | None, Tensor, dict[str, Tensor]]:
        features = self.features(x)
        logits = self.classifier(features)
        if return_features:
            return None, logits, {"main": features}
        return None, logits

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.features.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.classifier.parameters()

    def backbone_state_keys(self) -> list[str]:
        """The 13 VGG-16 convolutions (fc6 and fc7 are new layers, random as in the official
        model, whose fc layers are not converted from the ImageNet classifier)."""
        fc_layers = {len(self.features) - offset for offset in FC_LAYERS_FROM_END}
        return [
            key
            for key in self.state_dict()
            if key.startswith("features.") and int(key.split(".")[1]) not in fc_layers
        ]

    def init_state(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A torchvision VGG-16 state dict in this model's numbering (conv5 moves down one slot
        where pool4 was removed); a file already in the official numbering passes through."""
        if f"features.{CONV5_TORCHVISION[-1]}.weight" not in state:
            return dict(state)
        moved = dict(zip(CONV5_TORCHVISION, CONV5_OFFICIAL, strict=True))
        out: dict[str, Tensor] = {}
        for key, tensor in state.items():
            parts = key.split(".")
            if parts[0] == "features" and int(parts[1]) in moved:
                key = ".".join(["features", str(moved[int(parts[1])]), *parts[2:]])
            out[key] = tensor
        return out
