"""AdaptSegNet's losses as pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = 255
SOURCE_LABEL = 0.0  # the official domain labels: D says 0 for source, 1 for target
TARGET_LABEL = 1.0


def seg_loss(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Pixel cross-entropy averaged over labelled pixels.

    Args:
        logits: (N, C, H, W), already upsampled to the label size.
        labels: (N, H, W) int64 train ids, ``ignore_index`` where unlabelled.

    An image with no labelled pixel gives 0, not the NaN that a plain mean would.
    """
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)


def adv_loss(d_logits: Tensor, domain_label: float, gan: str = "vanilla") -> Tensor:
    """Discriminator loss against a constant domain label map.

    ``vanilla``: BCE with logits (the official default); ``ls``: least squares on the raw logits
    (LS-GAN, the October 2019 update).
    """
    d_logits = d_logits.float()
    target = torch.full_like(d_logits, domain_label)
    if gan == "vanilla":
        return F.binary_cross_entropy_with_logits(d_logits, target)
    if gan == "ls":
        return F.mse_loss(d_logits, target)
    raise ValueError(f"`gan` must be 'vanilla' or 'ls', got {gan!r}")
