"""What the trainer, the optimisers and the evaluator need of a segmentation network G, and
the one place that builds G from a backbone name."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from adaptseg.models.deeplab import DeeplabMulti
from adaptseg.models.deeplab_vgg import DeeplabVGG


@runtime_checkable
class Generator(Protocol):
    """AdaptSegNet's G: ``forward(x)`` gives ``(logits_aux or None, logits_main)`` at about
    1/8 of the input size (``return_features=True`` adds ``{level: map the head reads}``)."""

    backbone_name: str
    multi_level: bool
    feature_channels: dict[str, int]

    def __call__(
        self, x: Tensor, return_features: bool = False
    ) -> tuple[Tensor | None, Tensor] | tuple[Tensor | None, Tensor, dict[str, Tensor]]: ...

    def backbone_parameters(self) -> Iterator[nn.Parameter]: ...

    def head_parameters(self) -> Iterator[nn.Parameter]: ...

    def backbone_state_keys(self) -> list[str]: ...

    def init_state(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]: ...


def build_generator(
    num_classes: int,
    backbone: str,
    multi_level: bool = True,
    aspp_branches: int = 2,
    bn_mode: str = "train",
) -> DeeplabMulti | DeeplabVGG:
    """G for a backbone name: ``DeeplabMulti`` for the ResNets, ``DeeplabVGG`` for ``vgg16``."""
    if backbone == "vgg16":
        if multi_level:
            raise ValueError("backbone vgg16 is single-level (one head): set multi_level false")
        return DeeplabVGG(num_classes, aspp_branches)
    return DeeplabMulti(num_classes, backbone, multi_level, aspp_branches, bn_mode)
