"""The DeepLab-v2 ASPP classifier head (``Classifier_Module``), shared by both backbones."""

from __future__ import annotations

from torch import Tensor, nn

ASPP_DILATIONS = (6, 12, 18, 24)


class ClassifierModule(nn.Module):
    """DeepLab-v2 ASPP: parallel dilated 3x3 convs, summed.

    The official forward returns inside its loop, so only the first two branches (dilation 6
    and 12) are ever used: ``active_branches=2`` reproduces that (and is needed to evaluate the
    released checkpoints), ``4`` is the paper's text. All four branches always exist.
    """

    def __init__(self, in_channels: int, num_classes: int, active_branches: int = 2) -> None:
        super().__init__()
        self.active_branches = active_branches
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True)
            for d in ASPP_DILATIONS
        )
        for conv in self.conv2d_list:
            nn.init.normal_(conv.weight, 0.0, 0.01)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2d_list[0](x)
        for conv in self.conv2d_list[1 : self.active_branches]:
            out = out + conv(x)
        return out
