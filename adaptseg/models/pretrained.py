"""Pretrained backbone init from a local file: DeepLab-v2 init format or torchvision's ResNet.

The DeepLab-v2 init (``DeepLab_resnet_pretrained_init-f81d91e8.pth``) has keys prefixed with a
module name (``Scale.layer1.0.conv1.weight``) and a 2048-channel ``layer5`` classifier that the
official loader skips, so both heads start random. torchvision's state dict has bare keys and an
``fc`` classifier. A silent partial load is the top cause of "source-only gets 25 mIoU"
reports, so the loader counts the backbone tensors it filled and refuses too few.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from adaptseg.models.generator import Generator
from adaptseg.torchfile import TorchFileError, read_torch_file

log = logging.getLogger(__name__)


class InitWeightsError(ValueError):
    """The init file is unreadable or fills too few backbone tensors."""


def _unwrap(raw: object, path: Path) -> Mapping[str, Tensor]:
    if isinstance(raw, Mapping):
        for key in ("state_dict", "model"):
            if key in raw and isinstance(raw[key], Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise InitWeightsError(f"{path}: expected a state dict of tensors")
    return raw  # type: ignore[return-value]


def _candidate_keys(key: str) -> list[str]:
    """The model key a file key may stand for: itself, or without its first dotted token."""
    parts = key.split(".")
    return [key, ".".join(parts[1:])] if len(parts) > 1 else [key]


def load_init_weights(
    model: Generator, path: str | Path, min_match: float = 0.95
) -> tuple[int, int]:
    """Copy backbone tensors from ``path`` into ``model``. Head tensors are copied too where the
    file holds them under the model's own names and shapes (a G snapshot of the official
    training script, to continue from it); a DeepLab-v2 init file has none, so its heads stay
    random, as in the official code.

    Returns:
        (matched, total) backbone tensors.

    Raises:
        InitWeightsError: unreadable file, or fewer than ``min_match`` of the tensors matched.
    """
    path = Path(path)
    try:
        raw = read_torch_file(path)
    except TorchFileError as exc:
        raise InitWeightsError(f"init weights {exc}") from None
    source = model.init_state(_unwrap(raw, path))
    backbone_keys = set(model.backbone_state_keys())
    own = model.state_dict()
    filled: dict[str, Tensor] = {}
    heads: dict[str, Tensor] = {}
    for key, tensor in source.items():
        for candidate in _candidate_keys(key):
            if candidate in own and own[candidate].shape == tensor.shape:
                (filled if candidate in backbone_keys else heads)[candidate] = tensor
                break
    total = len(backbone_keys)
    if len(filled) < min_match * total:
        raise InitWeightsError(
            f"{path}: only {len(filled)} of {total} backbone tensors matched "
            f"(need {min_match:.0%}); is this a DeepLab-v2 init or torchvision file "
            f"for backbone {model.backbone_name!r}?"
        )
    with torch.no_grad():
        for key, tensor in {**filled, **heads}.items():
            own[key].copy_(tensor)
    log.info(
        "init weights %s: %d of %d backbone tensors matched, %d head tensors",
        path,
        len(filled),
        total,
        len(heads),
    )
    return len(filled), total


def load_discriminator_weights(discriminator: nn.Module, path: str | Path) -> None:
    """D weights from a file: an official D snapshot (``*_D1.pth`` for the aux level,
    ``*_D2.pth`` for the main one) or this project's layout, every tensor required.

    Raises:
        InitWeightsError: unreadable, or not the weights of this discriminator.
    """
    path = Path(path)
    try:
        state = _unwrap(read_torch_file(path), path)
    except TorchFileError as exc:
        raise InitWeightsError(f"discriminator weights {exc}") from None
    state = {key.removeprefix("module."): tensor for key, tensor in state.items()}
    try:
        discriminator.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()[:200]
        raise InitWeightsError(f"{path}: not weights of this discriminator ({first})") from None
