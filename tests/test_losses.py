"""The segmentation and adversarial losses on values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from adaptseg.losses import IGNORE_INDEX, adv_loss, seg_loss


def test_seg_loss_is_the_mean_cross_entropy_over_labelled_pixels_only():
    logits = torch.zeros(1, 4, 1, 3)  # uniform over 4 classes: -log(1/4) at every pixel
    logits[0, 2, 0, 1] = 50.0  # pixel 1 is sure of class 2, and unlabelled
    labels = torch.tensor([[[0, IGNORE_INDEX, 3]]])
    assert seg_loss(logits, labels).item() == pytest.approx(math.log(4))


def test_seg_loss_of_an_image_without_labelled_pixels_is_zero_and_keeps_the_graph():
    logits = torch.randn(1, 4, 2, 2, requires_grad=True)
    loss = seg_loss(logits, torch.full((1, 2, 2), IGNORE_INDEX))
    assert loss.item() == 0.0
    loss.backward()  # no NaN reaches the weights
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_seg_loss_with_some_pixels_ignored_is_not_zero():
    logits = torch.zeros(1, 2, 1, 2)
    assert seg_loss(logits, torch.tensor([[[IGNORE_INDEX, 1]]])).item() == pytest.approx(
        math.log(2)
    )


def test_adv_loss_defaults_to_the_official_vanilla_gan():
    logits = torch.tensor([[[[0.0, 2.0]]]])
    expected = (math.log(2) + math.log(1 + math.exp(-2.0))) / 2  # BCE against label 1
    assert adv_loss(logits, 1.0).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="`gan` must be 'vanilla' or 'ls', got 'wgan'"):
        adv_loss(logits, 1.0, "wgan")
