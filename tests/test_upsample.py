"""Separable bilinear upsampling is F.interpolate's interpolation, forward and backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config, tiny_data

from adaptseg.trainer import Trainer
from adaptseg.upsample import interpolation_matrix, separable_bilinear

SIZES = [((9, 17), (65, 129)), ((91, 161), (720, 1280)), ((8, 16), (8, 16)), ((32, 64), (13, 7)),
         ((1, 5), (4, 9))]  # fmt: skip


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize(("size_in", "size_out"), SIZES)
def test_equal_to_interpolate_forward_and_backward(size_in, size_out, align_corners):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size_in, requires_grad=True)
    y = x.detach().clone().requires_grad_(True)
    reference = F.interpolate(x, size=size_out, mode="bilinear", align_corners=align_corners)
    ours = separable_bilinear(y, size_out, align_corners)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    weights = torch.randn_like(reference)
    (reference * weights).sum().backward()
    (ours * weights).sum().backward()
    torch.testing.assert_close(y.grad, x.grad, rtol=0, atol=1e-4)


def test_each_row_of_an_interpolation_matrix_sums_to_one():
    for align_corners in (True, False):
        matrix = interpolation_matrix(91, 720, align_corners)
        torch.testing.assert_close(matrix.sum(1), torch.ones(720))
        assert (matrix >= 0).all() and (matrix > 0).sum(1).max() <= 2


def test_bf16_input_is_upsampled_in_float32():
    x = torch.randn(1, 19, 9, 17).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = separable_bilinear(x, (65, 129), True)
    assert out.dtype == torch.float32


def test_the_trainer_with_separable_upsampling_trains_like_interpolate():
    source, target, evals = tiny_data()
    a = Trainer(tiny_config(upsample="interpolate"), source, target, evals)
    b = Trainer(tiny_config(upsample="separable"), *tiny_data())
    for _ in range(2):
        out_a, out_b = a.step(), b.step()
    for key in ("loss_seg_src_main", "loss_adv_trg_main", "loss_d_main"):
        assert out_a[key] == pytest.approx(out_b[key], rel=1e-4), key
