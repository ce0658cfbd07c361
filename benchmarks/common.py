"""What every benchmark script shares: printing its JSON result and writing it to a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adaptseg.fileio import atomic_write_text


def emit(result: dict[str, Any], path: Path | None) -> dict[str, Any]:
    """Print ``result`` as JSON and, when ``path`` is given, write it there atomically."""
    text = json.dumps(result, indent=2)
    print(text)
    if path is not None:
        atomic_write_text(path, text + "\n")
    return result
