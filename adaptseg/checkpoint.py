"""Complete-state checkpoints: written atomically, read with ``weights_only=True``."""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptseg.fileio import atomic_write
from adaptseg.torchfile import TorchFileError, read_torch_file

log = logging.getLogger(__name__)
CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)\.pt$")
# Written into every checkpoint and checked on load. 2: discriminators and their optimisers
# keyed by level, D layers under the official names.
CHECKPOINT_FORMAT = 2
REQUIRED_KEYS = (
    "format",
    "step",
    "config",
    "model",
    "discriminators",
    "optimizer_g",
    "optimizers_d",
    "streams",
    "rng",
)


class CheckpointError(ValueError):
    """No readable checkpoint where one was expected."""


def atomic_torch_save(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` through a temporary file and a rename (never a half-written file)."""
    atomic_write(path, lambda handle: torch.save(state, handle))


def checkpoint_files(directory: str | Path) -> list[Path]:
    """``step_<N>.pt`` files in ``directory``, newest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in directory.iterdir()
        if (m := CHECKPOINT_PATTERN.match(p.name))
    ]
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(state: dict[str, Any], directory: str | Path, keep: int) -> Path:
    """Save ``state`` as ``step_<step>.pt`` and delete all but the ``keep`` newest."""
    path = Path(directory) / f"step_{int(state['step']):08d}.pt"
    atomic_torch_save(state, path)
    for old in checkpoint_files(directory)[keep:]:
        old.unlink(missing_ok=True)
    return path


def load_state(path: str | Path) -> dict[str, Any]:
    """Read one checkpoint (tensors and plain values only)."""
    try:
        state = read_torch_file(path)
    except TorchFileError as exc:
        raise CheckpointError(f"checkpoint {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not an adaptseg checkpoint (not a mapping)")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not an adaptseg checkpoint (no `{missing[0]}` key)")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {state['format']!r}; this version reads format "
            f"{CHECKPOINT_FORMAT}"
        )
    return state


def load_latest(directory: str | Path) -> tuple[dict[str, Any], Path] | None:
    """The newest readable checkpoint in ``directory``; a corrupt one falls back with a warning.

    Returns None when there is no checkpoint at all.

    Raises:
        CheckpointError: checkpoints exist but none is readable (never silently start over).
    """
    files = checkpoint_files(directory)
    for path in files:
        try:
            return load_state(path), path
        except CheckpointError as exc:
            log.warning("%s; falling back to the previous checkpoint", exc)
    if files:
        raise CheckpointError(
            f"{directory}: none of the {len(files)} checkpoints is readable; "
            "move them aside to start over"
        )
    return None


def rng_state() -> dict[str, Any]:
    """Every RNG the run touches, as tensors and plain Python values."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
