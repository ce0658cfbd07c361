"""How a study run ends when it does not simply finish: its exceptions and exit codes, in one
place (``python -m study.run --help`` lists the codes).

Each exception's message is the one line the user sees; ``study.run`` maps it to its code.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_INCOMPLETE = 1  # Ray Tune finished but planned confirm trials are missing or errored
EXIT_BAD_INPUT = 2  # a bad spec, data root or weight file; or another driver runs the study
EXIT_NO_SPACE = 3  # the study folder's disk is full (resumable once there is space)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM (resumable)


class SpecError(ValueError):
    """A bad study spec: one line naming the file, the key path and what was expected."""


class StudyLocked(Exception):
    """Another driver runs this study (the message names it)."""


class Interrupted(Exception):
    """The study was stopped by a signal; running the same command resumes it."""


class StudyIncomplete(Exception):
    """Ray Tune finished but planned trials are missing or errored (exit 1, not 0)."""


class NoSpace(Exception):
    """The study folder's disk is full; running the same command again once there is space
    resumes the study."""

    def __init__(self, folder: Path, free: str) -> None:
        super().__init__(str(folder))
        self.folder, self.free = folder, free

    def line(self) -> str:
        return (
            f"error: no space left on the disk of {self.folder} ({self.free} free); free some "
            "space and run the same command again: it resumes where it stopped"
        )
