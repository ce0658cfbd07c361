"""Optimisers and the poly learning-rate schedule of the official code.

**The official backbone update.** The official ``DeeplabMulti.get_1x_lr_params_NOscale()``
walks ``module.modules()`` (recursive) and, for each module, ``module.parameters()``
(recursive again), so a backbone tensor is listed once for every module on its path: conv1's
weight once, the convolutions inside a residual block three times, a block's projection
shortcut four times (ResNet-101: 314 entries for 104 tensors). PyTorch 0.3/0.4, which trained
the paper's models, walked each group's list in order, repeats included, and applied the whole
SGD update at each visit, with the weight decay added into the gradient in place::

    for p in group["params"]:       # a tensor listed k times is visited k times
        p.grad += weight_decay * p
        buf = momentum * buf + p.grad   (buf = p.grad at the first visit ever)
        p -= lr * buf

``backbone_update: official`` (the default) reproduces that, with the multiplicities derived
from the module structure as the official generator derives them; ``once`` is the update a
de-duplicated list gives (each tensor once per step), the fix. VGG-16's official optimiser
lists every parameter once, so both settings are the same there; Adam was never used by the
official code, so with ``optimizer: adam`` every tensor is updated once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn
from torch.optim.sgd import sgd as functional_sgd

from adaptseg.config import TrainConfig
from adaptseg.models import DeeplabMulti, Generator

D_BETAS = (0.9, 0.99)
OFFICIAL_BACKBONE_ROOTS = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


def poly_lr(base_lr: float, step: int, schedule_steps: int, power: float) -> float:
    """``base_lr * (1 - step / schedule_steps) ** power`` (step counts from 0)."""
    return base_lr * (1.0 - step / schedule_steps) ** power


def official_backbone_list(model: nn.Module) -> Iterator[nn.Parameter]:
    """The official ``get_1x_lr_params_NOscale()``: every trainable backbone parameter, once
    for every module (of conv1, bn1, layer1..4, recursively) whose parameters contain it."""
    for name in OFFICIAL_BACKBONE_ROOTS:
        for module in getattr(model, name).modules():
            yield from (p for p in module.parameters() if p.requires_grad)


def backbone_visits(model: Generator, update: str) -> dict[int, int]:
    """``id(parameter) -> how many times one step updates it`` for the backbone group."""
    visits = {id(p): 1 for p in model.backbone_parameters()}
    if update == "official" and isinstance(model, DeeplabMulti):
        visits = dict.fromkeys(visits, 0)
        for parameter in official_backbone_list(model):
            visits[id(parameter)] += 1
    return visits


class RepeatedVisitSGD(torch.optim.Optimizer):
    """SGD (momentum, no dampening, no Nesterov) that visits parameter ``p`` ``visits[id(p)]``
    times per step, adding the weight decay into ``p.grad`` in place at each visit, as
    PyTorch 0.3/0.4 did for a list with repeats (module docstring). With every count 1 it is
    ``torch.optim.SGD``. The momentum buffers live in ``state[p]["momentum_buffer"]`` as in
    ``torch.optim.SGD``, so checkpoints hold them; ``foreach`` and ``fused`` choose PyTorch's
    kernels for each visit, the same maths."""

    def __init__(
        self,
        groups: list[dict],
        lr: float,
        momentum: float,
        weight_decay: float,
        visits: dict[int, int],
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(groups, defaults)
        self.visits = dict(visits)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            most = max((self.visits.get(id(p), 1) for p in params), default=0)
            for visit in range(1, most + 1):
                chosen = [p for p in params if self.visits.get(id(p), 1) >= visit]
                grads = [p.grad for p in chosen]
                if group["weight_decay"]:
                    torch._foreach_add_(grads, chosen, alpha=group["weight_decay"])
                buffers = [self.state[p].get("momentum_buffer") for p in chosen]
                functional_sgd(
                    chosen,
                    grads,
                    buffers,
                    foreach=group["foreach"],
                    fused=group["fused"],
                    weight_decay=0.0,
                    momentum=group["momentum"],
                    lr=group["lr"],
                    dampening=0.0,
                    nesterov=False,
                    maximize=False,
                )
                for parameter, buffer in zip(chosen, buffers, strict=True):
                    self.state[parameter]["momentum_buffer"] = buffer
        return loss


def build_g_optimizer(cfg: TrainConfig, model: Generator) -> torch.optim.Optimizer:
    """Two groups: backbone at ``lr``, heads at ``head_lr_mult * lr`` (official: 10x)."""
    groups = [
        {"params": list(model.backbone_parameters()), "lr": cfg.lr},
        {"params": list(model.head_parameters()), "lr": cfg.lr * cfg.head_lr_mult},
    ]
    if cfg.optimizer == "sgd":
        visits = backbone_visits(model, cfg.backbone_update)
        return RepeatedVisitSGD(
            groups,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            visits=visits,
            **implementation(cfg),
        )
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
