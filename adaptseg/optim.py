"""Optimisers and the poly learning-rate schedule of the official code."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from adaptseg.config import TrainConfig
from adaptseg.models import Generator

D_BETAS = (0.9, 0.99)


def poly_lr(base_lr: float, step: int, schedule_steps: int, power: float) -> float:
    """``base_lr * (1 - step / schedule_steps) ** power`` (step counts from 0)."""
    return base_lr * (1.0 - step / schedule_steps) ** power


def build_g_optimizer(cfg: TrainConfig, model: Generator) -> torch.optim.Optimizer:
    """Two groups: backbone at ``lr``, heads at ``head_lr_mult * lr`` (official: 10x)."""
    groups = [
        {"params": list(model.backbone_parameters()), "lr": cfg.lr},
        {"params": list(model.head_parameters()), "lr": cfg.lr * cfg.head_lr_mult},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
            **implementation(cfg),
        )  # fmt: skip
    return torch.optim.Adam(
        groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **implementation(cfg)
    )


def implementation(cfg: TrainConfig) -> dict[str, bool]:
    """``optimizer_impl``: PyTorch's choice, the multi-tensor (foreach) or the fused kernels.
    The update is the same maths; only how many kernels carry it out changes."""
    if cfg.optimizer_impl == "foreach":
        return {"foreach": True}
    if cfg.optimizer_impl == "fused":
        return {"fused": True}
    return {}


def build_d_optimizer(cfg: TrainConfig, discriminator: nn.Module) -> torch.optim.Optimizer:
    """Adam with betas (0.9, 0.99), no weight decay (official)."""
    return torch.optim.Adam(
        discriminator.parameters(), lr=cfg.lr_d, betas=D_BETAS, **implementation(cfg)
    )


def set_poly_lr(
    cfg: TrainConfig,
    step: int,
    optimizer_g: torch.optim.Optimizer,
    optimizers_d: Iterable[torch.optim.Optimizer],
) -> tuple[float, float]:
    """Apply the schedule for ``step`` to every optimiser; returns (lr_g, lr_d)."""
    lr_g = poly_lr(cfg.lr, step, cfg.schedule_steps, cfg.poly_power)
    lr_d = poly_lr(cfg.lr_d, step, cfg.schedule_steps, cfg.poly_power)
    optimizer_g.param_groups[0]["lr"] = lr_g
    optimizer_g.param_groups[1]["lr"] = lr_g * cfg.head_lr_mult
    for optimizer in optimizers_d:
        optimizer.param_groups[0]["lr"] = lr_d
    return lr_g, lr_d
