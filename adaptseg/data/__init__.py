"""Datasets and training streams.

The names below load on first use, so that ``adaptseg.data.labels`` or the synthetic
benchmark's command line do not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {"InfiniteStream": "adaptseg.data.stream", "RandomSegDataset": "adaptseg.data.random"}
__all__ = ["InfiniteStream", "RandomSegDataset"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
