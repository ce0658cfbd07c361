"""Where a study's numbers came from: the code version and the package versions."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from adaptseg.devices import host_cpu_kind
from adaptseg.fileio import atomic_write_text

PACKAGES = (
    "adaptseg-study",
    "torch",
    "torchvision",
    "ray",
    "optuna",
    "numpy",
    "pyarrow",
    "plotly",
)


def code_version() -> str:
    """The git commit of the installed code (``+dirty`` with local changes), else 'unknown'."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit


def provenance() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "code_version": code_version(),
        "python": platform.python_version(),
        "packages": versions,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }


def machine() -> dict[str, Any]:
    """The driver's machine: its CPU as torch uses it (AVX2 / AVX-512 / AVX-512 BF16 / AMX) and
    its GPUs. Each trial's own device is in its row of trials.parquet (``device``)."""
    name, kind = host_cpu_kind()
    gpus = []
    for index in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(index)
        gpus.append(f"{torch.cuda.get_device_name(index)} (sm_{major}{minor})")
    return {"cpu": name, "cpu_kind": kind, "cpu_count": os.cpu_count(), "gpus": gpus}


def write_provenance(path: Path) -> None:
    """Written once, when the study starts (a resume keeps the original record)."""
    if not path.exists():
        atomic_write_text(path, json.dumps(provenance(), indent=2) + "\n")
