"""Confusion-matrix mIoU against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from adaptseg.data.labels import CLASS_SUBSETS
from adaptseg.evaluation import ConfusionMatrix, metrics_from_confusion


def test_confusion_matrix_hand_made_example():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    prediction = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 2]])
    cm = ConfusionMatrix(3)
    cm.update(target, prediction)
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 1]]
    # class 0: tp 1, fp 1, fn 1 -> 1/3; class 1: tp 2, fp 1, fn 1 -> 1/2; class 2: 1/3
    assert cm.iou().tolist() == pytest.approx([1 / 3, 1 / 2, 1 / 3])
    assert cm.miou() == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)


def test_accumulates_over_updates_and_ignores_absent_classes():
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    cm.update(torch.tensor([1, 255]), torch.tensor([0, 3]))
    iou = cm.iou()
    assert math.isnan(iou[2]) and math.isnan(iou[3])  # prediction 3 fell on an ignored pixel
    # class 2 never appears: excluded from the nanmean, like the official compute_iou
    assert cm.miou() == pytest.approx(((1 / 2) + (1 / 2)) / 2)


def test_synthia_16_and_13_class_miou_by_hand():
    """A known confusion matrix: every class right once; then wall (3) predicted as road (0)
    twice, terrain (9) as vegetation (8) once, and pole (5) as sky (10) once."""
    cm = ConfusionMatrix(19)
    labels = torch.arange(19)
    cm.update(labels, labels)
    cm.update(torch.tensor([3, 3, 9, 5]), torch.tensor([0, 0, 8, 10]))
    # By hand, IoU = TP / (TP + FP + FN): road 1/3 (2 wall pixels called road), wall 1/3,
    # vegetation 1/2, terrain 1/2, pole 1/2, sky 1/2; the 13 other classes 1.
    iou = {0: 1 / 3, 3: 1 / 3, 8: 1 / 2, 9: 1 / 2, 5: 1 / 2, 10: 1 / 2}
    value = [iou.get(c, 1.0) for c in range(19)]
    by_hand = {n: sum(value[c] for c in CLASS_SUBSETS[n]) / n for n in (19, 16, 13)}
    assert by_hand[16] == pytest.approx((11 + 1 / 3 + 1 / 3 + 1 / 2 + 1 / 2 + 1 / 2) / 16)
    assert by_hand[13] == pytest.approx((10 + 1 / 3 + 1 / 2 + 1 / 2) / 13)
    for n in (19, 16, 13):
        metrics = metrics_from_confusion(cm, evaluation_classes=n)
        assert metrics["miou"] == pytest.approx(by_hand[n])
        assert len(metrics) == 20, "every class's IoU is kept, whatever mIoU averages over"
        assert metrics["iou_wall"] == pytest.approx(1 / 3)
    assert len(CLASS_SUBSETS[16]) == 16 and {9, 14, 16}.isdisjoint(CLASS_SUBSETS[16])
    assert set(CLASS_SUBSETS[13]) == set(CLASS_SUBSETS[16]) - {3, 4, 5}


def test_a_label_equal_to_the_class_count_is_ignored_like_255():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 3, 1]), torch.tensor([0, 2, 1]))
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_counts_stay_exact_past_two_to_the_24_pixels():
    # A Cityscapes val set has about 5e8 pixels: a float32 count stops at 2**24 for road.
    cm = ConfusionMatrix(2)
    cm.matrix[0, 0] = 2**24
    cm.update(torch.tensor([0]), torch.tensor([0]))
    assert int(cm.matrix[0, 0]) == 2**24 + 1


def test_the_matrix_lives_on_the_device_asked_for():
    assert ConfusionMatrix(3, device="meta").matrix.device.type == "meta"


@pytest.mark.parametrize(("classes", "evaluation", "fails"), [
    (19, 13, False), (19, 19, False), (16, 16, False), (16, 13, True), (14, 13, True),
])  # fmt: skip
def test_the_13_class_evaluation_needs_the_19_classes(classes, evaluation, fails):
    cm = ConfusionMatrix(classes)
    cm.update(torch.arange(classes), torch.arange(classes))
    if fails:
        with pytest.raises(ValueError, match=f"needs the 19 Cityscapes classes, not {classes}"):
            metrics_from_confusion(cm, evaluation_classes=evaluation)
    else:
        assert metrics_from_confusion(cm, evaluation_classes=evaluation)["miou"] == 1.0
