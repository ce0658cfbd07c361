"""Segmentation metrics: one confusion matrix over a whole split, per-class IoU, mIoU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from adaptseg.data.labels import CITYSCAPES_CLASSES, CLASS_SUBSETS


class ConfusionMatrix:
    """Rows: ground truth, columns: prediction; pixels labelled outside [0, C) are ignored."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, target: Tensor, prediction: Tensor) -> None:
        target, prediction = target.flatten(), prediction.flatten()
        valid = (target >= 0) & (target < self.num_classes)
        index = target[valid] * self.num_classes + prediction[valid]
        counts = torch.bincount(index, minlength=self.num_classes**2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes)

    def iou(self) -> Tensor:
        """Per-class IoU (float64); NaN for a class absent from both GT and prediction."""
        m = self.matrix.double()
        diagonal = m.diag()
        return diagonal / (m.sum(0) + m.sum(1) - diagonal)

    def miou(self, classes: Sequence[int] | None = None) -> float:
        """nanmean of the IoUs (over ``classes`` when given), as the official compute_iou."""
        iou = self.iou().cpu()
        if classes is not None:
            iou = iou[list(classes)]
        return float(torch.nanmean(iou))  # NaN when no class was seen at all: no score


def class_names(num_classes: int) -> tuple[str, ...]:
    if num_classes == len(CITYSCAPES_CLASSES):
        return CITYSCAPES_CLASSES
    return tuple(f"class{i}" for i in range(num_classes))


def metrics_from_confusion(confusion: ConfusionMatrix, evaluation_classes: int) -> dict:
    """``{"miou": .., "iou_<class>": ..}``: mIoU over the 19 classes or SYNTHIA's 16 or 13
    (``CLASS_SUBSETS``), and every class's IoU (so any subset's mIoU can be taken later)."""
    names = class_names(confusion.num_classes)
    if evaluation_classes != confusion.num_classes and (
        confusion.num_classes != len(CITYSCAPES_CLASSES) or evaluation_classes not in CLASS_SUBSETS
    ):
        raise ValueError(
            f"the {evaluation_classes}-class SYNTHIA evaluation needs the 19 Cityscapes "
            f"classes, not {confusion.num_classes}"
        )
    indices = (
        CLASS_SUBSETS[evaluation_classes]
        if evaluation_classes != confusion.num_classes
        else range(confusion.num_classes)
    )
    iou = confusion.iou().cpu().tolist()
    out: dict[str, float] = {"miou": confusion.miou(indices)}
    out.update({f"iou_{name}": value for name, value in zip(names, iou, strict=True)})
    return out
