"""AdaptSegNet's losses as pure functions."""

from __future__ import annotations

import math

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


def entropy_map(prob: Tensor) -> Tensor:
    """ADVENT's weighted self-information map, what its discriminators see: per pixel and
    class ``-p log2(p + 1e-30) / log2(C)`` of a softmax ``prob`` over dim 1 (N x C x H x W), the
    same shape; summed over classes it is the pixel's entropy normalised to [0, 1]."""
    classes = prob.shape[1]
    return -prob * torch.log2(prob + 1e-30) / math.log2(classes)


def entropy_loss(prob: Tensor) -> Tensor:
    """MinEnt's loss: ``entropy_map`` summed over classes and averaged over batch and pixels, a
    scalar in [0, 1] (1 for a uniform softmax, 0 for a one-hot one)."""
    return entropy_map(prob).sum(dim=1).mean()
