"""A full disk stops the study at once, with one line, and the rerun resumes.

Without this, a full disk shows as hundreds of lines: every trial errors and is retried (each
retry fails the same way), Optuna's SQLite writes fail inside Ray's callbacks, and the stage
ends "incomplete" with the cause buried. Here the driver watches (``study.driver.DiskWatch``):
when a trial fails for lack of space, or the study folder's disk has less than
``MIN_FREE_BYTES`` left, it stops Tune the way Ctrl-C does (Tune saves what it can) and the run
exits ``EXIT_NO_SPACE`` naming the folder.
Nothing is repaired or marked in the Optuna database on the way out: the rerun does that once
space is back, from Ray's records.
"""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path

EXIT_NO_SPACE = 3
MIN_FREE_BYTES = 1 << 20
SIGNS = ("No space left on device", "database or disk is full", "Disk quota exceeded")


class NoSpace(Exception):
    """The study folder's disk is full; running the same command again once there is space
    resumes the study."""

    def __init__(self, folder: Path) -> None:
        super().__init__(str(folder))
        self.folder = folder

    def line(self) -> str:
        return (
            f"error: no space left on the disk of {self.folder} ({free_text(self.folder)} "
            "free); free some space and run the same command again: it resumes where it stopped"
        )


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


class WithoutNoSpaceTracebacks(logging.Filter):
    """Drops Ray's log records about a full disk (each with a traceback: one per failed trial
    and per failed snapshot write); the driver says it in one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        text = record.getMessage()
        return not (any(sign in text for sign in SIGNS) or caused_by_no_space(exc))


def quiet_no_space_logs() -> None:
    """Install the filter on the handlers Ray logs through (its own, and the root's)."""
    for logger in (logging.getLogger("ray"), logging.getLogger()):
        for handler in logger.handlers:
            if not any(isinstance(f, WithoutNoSpaceTracebacks) for f in handler.filters):
                handler.addFilter(WithoutNoSpaceTracebacks())
