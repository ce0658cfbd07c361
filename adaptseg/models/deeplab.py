"""DeepLab-v2 with an auxiliary head on conv4 and the main head on conv5 (AdaptSegNet's G).

Built from torchvision's residual blocks, rearranged the way the official ``deeplab_multi.py``
(Caffe-style ResNet) builds them: the stride of a block sits on its first 1x1 conv, the stem
max-pool uses ceil mode, every block of layer3 has dilation 2 and every block of layer4
dilation 4, BatchNorm affine parameters never train. Module names (``conv1`` ... ``layer4``,
``layer5`` = aux head, ``layer6`` = main head, ``conv2d_list``) are the official ones, so
DeepLab init files and released AdaptSegNet checkpoints map onto it key for key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from adaptseg.models.aspp import ClassifierModule

# backbone name -> (block type, blocks per stage, stem width, stage widths)
BACKBONES: dict[str, tuple[type[nn.Module], tuple[int, ...], int, tuple[int, ...]]] = {
    "resnet101": (Bottleneck, (3, 4, 23, 3), 64, (64, 128, 256, 512)),
    "resnet50": (Bottleneck, (3, 4, 6, 3), 64, (64, 128, 256, 512)),
    # A CPU preset for tests and the quick-start study: same topology, 1 basic block a stage.
    "small": (BasicBlock, (1, 1, 1, 1), 16, (16, 32, 64, 128)),
}
STAGE_SETTINGS = ((1, 1), (2, 1), (1, 2), (1, 4))  # (stride, dilation) of layer1 .. layer4
DILATED_STAGES = (2, 4)


def _caffe_block(block: nn.Module, stride: int, dilation: int) -> None:
    """Move a block's stride onto its first conv and set its dilation (in place)."""
    first, middle = block.conv1, block.conv2
    if isinstance(block, Bottleneck):
        first.stride, middle.stride = (stride, stride), (1, 1)
        middle.dilation, middle.padding = (dilation, dilation), (dilation, dilation)
    else:  # BasicBlock: both convs are 3x3; torchvision refuses dilation > 1 at construction.
        for conv in (first, middle):
            conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)


def _make_stage(
    block_type: type[nn.Module],
    inplanes: int,
    planes: int,
    blocks: int,
    stride: int,
    dilation: int,
) -> tuple[nn.Sequential, int]:
    expansion = block_type.expansion  # type: ignore[attr-defined]
    outplanes = planes * expansion
    downsample = None
    # The official condition: a projection shortcut where the shape changes, and in every
    # dilated stage (layer3, layer4) even where it does not: it matters for the `small` preset,
    # whose basic blocks keep the width, and the official init files carry these weights.
    if stride != 1 or inplanes != outplanes or dilation in DILATED_STAGES:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False),
            nn.BatchNorm2d(outplanes),
        )
    layers = []
    for index in range(blocks):
        block = block_type(
            inplanes if index == 0 else outplanes,
            planes,
            stride=stride if index == 0 else 1,
            downsample=downsample if index == 0 else None,
        )
        _caffe_block(block, stride if index == 0 else 1, dilation)
        layers.append(block)
    return nn.Sequential(*layers), outplanes


class DeeplabMulti(nn.Module):
    """AdaptSegNet's segmentation network G.

    ``forward(x)`` returns ``(logits_aux, logits_main)`` at about 1/8 of the input size
    (``logits_aux`` is None when ``multi_level`` is False: the aux head is then not built or
    computed at all). The network does no upsampling; losses do.

    Args:
        num_classes: output classes (19 for Cityscapes).
        backbone: ``resnet101`` (the paper's), ``resnet50`` or ``small`` (a CPU preset).
        multi_level: build and run the conv4 auxiliary head.
        aspp_branches: 2 = the official code's behaviour, 4 = the paper's text.
        bn_mode: ``train`` = the official behaviour (batch statistics in training, running
            statistics updated; affine frozen), ``frozen`` = BatchNorm always in eval mode.
    """

    def __init__(
        self,
        num_classes: int = 19,
        backbone: str = "resnet101",
        multi_level: bool = True,
        aspp_branches: int = 2,
        bn_mode: str = "train",
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"`backbone` must be one of {sorted(BACKBONES)}, got {backbone!r}")
        if aspp_branches not in (2, 4):
            raise ValueError(f"`aspp_branches` must be 2 or 4, got {aspp_branches!r}")
        if bn_mode not in ("train", "frozen"):
            raise ValueError(f"`bn_mode` must be 'train' or 'frozen', got {bn_mode!r}")
        block_type, blocks, stem, widths = BACKBONES[backbone]
        self.backbone_name = backbone
        self.multi_level = multi_level
        self.bn_mode = bn_mode
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        channels = stem
        for index, ((stride, dilation), planes, count) in enumerate(
            zip(STAGE_SETTINGS, widths, blocks, strict=True), start=1
        ):
            stage, channels = _make_stage(block_type, channels, planes, count, stride, dilation)
            setattr(self, f"layer{index}", stage)
            if index == 3:
                aux_channels = channels
        self._init_backbone()
        self.layer5 = (
            ClassifierModule(aux_channels, num_classes, aspp_branches) if multi_level else None
        )
        self.layer6 = ClassifierModule(channels, num_classes, aspp_branches)
        self.feature_channels = {"aux": aux_channels, "main": channels}

    def _init_backbone(self) -> None:
        """The official init: convs N(0, 0.01), BN weight 1 / bias 0, BN affine frozen."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.01)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
                module.weight.requires_grad_(False)
                module.bias.requires_grad_(False)

    def forward(
        self, x: Tensor, return_features: bool = False
    ) -> tuple[Tensor | None, Tensor] | tuple[Tensor | None, Tensor, dict[str, Tensor]]:
        """``(logits_aux, logits_main)``; with ``return_features`` also the maps each head reads,
        ``{"aux": conv4, "main": conv5}`` (for feature-level adaptation)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        features_conv4 = self.layer3(x)  # (N, C4, H/8, W/8)
        logits_aux = self.layer5(features_conv4) if self.layer5 is not None else None
        features_conv5 = self.layer4(features_conv4)
        logits_main = self.layer6(features_conv5)
        if return_features:
            return logits_aux, logits_main, {"aux": features_conv4, "main": features_conv5}
        return logits_aux, logits_main

    def init_state(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """An init file's state dict in this model's key layout (already the same here)."""
        return dict(state)

    def train(self, mode: bool = True) -> DeeplabMulti:
        super().train(mode)
        if self.bn_mode == "frozen":
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Trainable parameters of conv1 .. layer4 (the official 1x learning-rate group)."""
        for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"):
            yield from (p for p in getattr(self, name).parameters() if p.requires_grad)

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the ASPP heads (the official 10x learning-rate group)."""
        for head in (self.layer5, self.layer6):
            if head is not None:
                yield from head.parameters()

    def backbone_state_keys(self) -> list[str]:
        """State-dict keys of the backbone (what a pretrained init file must provide)."""
        prefixes = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
        return [
            k
            for k in self.state_dict()
            if k.startswith(prefixes) and not k.endswith("num_batches_tracked")
        ]


def output_size(size: tuple[int, int], model: DeeplabMulti | None = None) -> tuple[int, int]:
    """Logit size for an HxW input (the official ``outS``), computed by a dry forward."""
    model = model if model is not None else DeeplabMulti(1, "small", multi_level=False)
    with torch.inference_mode():
        was_training = model.training
        model.eval()
        _, logits = model(torch.zeros(1, 3, *size))
        model.train(was_training)
    return int(logits.shape[-2]), int(logits.shape[-1])
