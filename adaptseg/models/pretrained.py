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
from torch import Tensor

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
    """Copy backbone tensors from ``path`` into ``model``; heads stay random.

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
    for key, tensor in source.items():
        for candidate in _candidate_keys(key):
            if candidate in backbone_keys and own[candidate].shape == tensor.shape:
                filled[candidate] = tensor
                break
    total = len(backbone_keys)
    if len(filled) < min_match * total:
        raise InitWeightsError(
            f"{path}: only {len(filled)} of {total} backbone tensors matched "
            f"(need {min_match:.0%}); is this a DeepLab-v2 init or torchvision file "
            f"for backbone {model.backbone_name!r}?"
        )
    with torch.no_grad():
        for key, tensor in filled.items():
            own[key].copy_(tensor)
    log.info("init weights %s: %d of %d backbone tensors matched", path, len(filled), total)
    return len(filled), total
