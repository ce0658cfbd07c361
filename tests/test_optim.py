"""The optimisers the official code builds: groups, learning rates, momentum, decay, betas."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from adaptseg.models import FCDiscriminator, build_generator
from adaptseg.optim import build_d_optimizer, build_g_optimizer


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_g_starts_at_lr_for_the_backbone_and_ten_times_it_for_the_heads(optimizer):
    cfg = tiny_config(optimizer=optimizer, lr=2e-4, head_lr_mult=10, weight_decay=5e-4)
    model = build_generator(
        cfg.num_classes, cfg.backbone, cfg.multi_level, cfg.aspp_branches, cfg.bn_mode
    )
    groups = build_g_optimizer(cfg, model).param_groups
    assert [g["lr"] for g in groups] == pytest.approx([2e-4, 2e-3])
    assert [g["weight_decay"] for g in groups] == [5e-4, 5e-4]
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    if optimizer == "sgd":
        assert [g["momentum"] for g in groups] == [cfg.momentum, cfg.momentum]


def test_d_is_adam_at_lr_d_with_the_official_betas_and_no_decay():
    cfg = tiny_config(lr_d=3e-5)
    (group,) = build_d_optimizer(cfg, FCDiscriminator(19, ndf=8)).param_groups
    assert isinstance(build_d_optimizer(cfg, FCDiscriminator(19, ndf=8)), torch.optim.Adam)
    assert group["lr"] == 3e-5 and group["betas"] == (0.9, 0.99) and group["weight_decay"] == 0
