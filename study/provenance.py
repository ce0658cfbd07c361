"""Where a study's numbers came from: the code version and the package versions."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

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
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
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
        "code_version": code_version(), "python": platform.python_version(),
        "packages": versions, "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip


def write_provenance(path: Path) -> None:
    """Written once, when the study starts (a resume keeps the original record)."""
    if not path.exists():
        atomic_write_text(path, json.dumps(provenance(), indent=2) + "\n")
