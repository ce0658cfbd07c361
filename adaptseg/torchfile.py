"""Reading ``.pt`` / ``.pth`` files a user hands the project, safely and with one-line errors.

Every file is read with ``weights_only=True``: tensors and plain Python values load; a pickle
that would build other objects (and so could run code) is refused. PyTorch's own messages run
to several lines and advise retrying with ``weights_only=False``, unsafe for a file of unknown
origin, so they are replaced by one line that says what the file is not.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch

# How torch's weights-only unpickler names an object it will not build (two wordings).
UNSUPPORTED_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")


class TorchFileError(ValueError):
    """The file is missing, unreadable, not written by ``torch.save`` or refused."""


def read_torch_file(path: str | Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors.

    Raises:
        TorchFileError: ``"<path>: <what is wrong>"``.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": not news
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TorchFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TorchFileError(f"{path}: is a folder, not a weights file") from None
    except OSError as exc:
        raise TorchFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 - whatever the unpickler says, the file is unusable
        found = UNSUPPORTED_GLOBAL.search(str(exc))
        if found:
            raise TorchFileError(
                f"{path}: refused: it holds a Python object ({found.group(1)}) besides tensors, "
                "and such objects are never unpickled"
            ) from None
        raise TorchFileError(
            f"{path}: not a readable PyTorch weights file (truncated, corrupt, or not written "
            "by torch.save)"
        ) from None
