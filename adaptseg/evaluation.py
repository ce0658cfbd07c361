"""Segmentation metrics: one confusion matrix over a whole split, per-class IoU, mIoU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from adaptseg.data.labels import CITYSCAPES_CLASSES

# The 13-class SYNTHIA evaluation (Chen et al. 2017): the 19 minus wall, fence, pole, terrain,
# truck and train.
SYNTHIA13_INDICES: tuple[int, ...] = (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)


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
    """``{"miou": .., "iou_<class>": ..}`` over the 19 classes or SYNTHIA's 13."""
    names = class_names(confusion.num_classes)
    if evaluation_classes == 13 and confusion.num_classes != len(CITYSCAPES_CLASSES):
        raise ValueError(
            f"the 13-class SYNTHIA evaluation needs the 19 Cityscapes classes, not "
            f"{confusion.num_classes}"
        )
    indices = SYNTHIA13_INDICES if evaluation_classes == 13 else range(confusion.num_classes)
    iou = confusion.iou().cpu().tolist()
    out: dict[str, float] = {"miou": confusion.miou(indices)}
    out.update({f"iou_{names[i]}": iou[i] for i in indices})
    return out
