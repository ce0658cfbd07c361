"""A full disk stops the study at once, with one line, and the rerun resumes.

Without this, a full disk shows as hundreds of lines: every trial errors and is retried (each
retry fails the same way), Optuna's SQLite writes fail inside Ray's callbacks, and the stage
ends "incomplete" with the cause buried. Here the driver watches (``DiskWatch``):
when a trial fails for lack of space, or the study folder's disk has less than
``MIN_FREE_BYTES`` left, it stops Tune the way Ctrl-C does (Tune saves what it can) and the run
exits ``study.errors.EXIT_NO_SPACE`` naming the folder.
Nothing is repaired or marked in the Optuna database on the way out: the rerun does that once
space is back, from Ray's records.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from ray import tune

from study.errors import NoSpace
from study.ray_internals.logs import drop_on_ray_handlers

MIN_FREE_BYTES = 1 << 20
# How the OS and SQLite word a full disk (in exceptions, and in the error files of trials).
SIGNS = ("No space left on device", "database or disk is full", "Disk quota exceeded")


def no_space(folder: Path) -> NoSpace:
    return NoSpace(folder, free_text(folder))


def free_bytes(folder: Path) -> int | None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return None


def free_text(folder: Path) -> str:
    free = free_bytes(folder)
    return "unknown" if free is None else f"{free / (1 << 20):.0f} MB"


def disk_full(folder: Path) -> bool:
    free = free_bytes(folder)
    return free is not None and free < MIN_FREE_BYTES


def caused_by_no_space(exc: BaseException | None) -> bool:
    """Whether an exception, or any in its chain (Ray and SQLAlchemy wrap them), is a full disk."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(sign in str(exc) for sign in SIGNS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def error_says_no_space(error_file: str | None) -> bool:
    if not error_file:
        return False
    try:
        text = Path(error_file).read_text(errors="replace")
    except OSError:
        return False
    return any(sign in text for sign in SIGNS)


def about_no_space(record: logging.LogRecord) -> bool:
    """A log record about a full disk (Ray logs one per failed trial and per failed snapshot
    write, each with a traceback; the driver says it in one line instead)."""
    exc = record.exc_info[1] if record.exc_info else None
    return any(sign in record.getMessage() for sign in SIGNS) or caused_by_no_space(exc)


def quiet_no_space_logs() -> None:
    drop_on_ray_handlers(about_no_space, "no-space")


class DiskWatch(tune.Callback):
    """Stops the run (as Ctrl-C does) when a trial fails for lack of space or the study's disk
    is full; ``full`` then tells the driver why the run stopped."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.full = folder, False

    def _stop(self) -> None:
        if not self.full:
            self.full = True
            os.kill(os.getpid(), signal.SIGINT)

    def _check(self, trial: Any) -> None:
        if error_says_no_space(getattr(trial, "error_file", None)) or disk_full(self.folder):
            self._stop()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check(trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if disk_full(self.folder):
            self._stop()
