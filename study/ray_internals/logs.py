"""What Ray logs, matched by its wording: the filters that keep the driver's terminal to one line
per event (the whole text stays in Ray's log files and each trial's ``error.txt``).

Ray's messages are not an API: an upgrade that rewords one makes its filter pass the message
through (a noisier terminal, never a lost error); ``tests/test_ray_internals.py`` checks each
wording against the installed Ray.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

TRIAL_TASK_FAILED = "Trial task failed for trial"  # ray.tune.execution.tune_controller
RESUME_HINT = "Tuner.restore(path="  # ray.tune.tune's restore_entrypoint, after an interruption


class WithoutTrialTracebacks(logging.Filter):
    """Ray logs each failed trial task with its traceback (kept in the trial's error file); the
    driver's terminal says it in one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(TRIAL_TASK_FAILED)


class WithoutRayResumeHint(logging.Filter):
    """Ray Tune's "Resume experiment with: Tuner.restore(...)" contradicts the project's own
    resume command (the same study.run command), which the CLI prints."""

    def filter(self, record: logging.LogRecord) -> bool:
        return RESUME_HINT not in record.getMessage()


class Without(logging.Filter):
    """Drops the records ``matches`` says yes to (e.g. a full disk's, one per failed trial and
    snapshot write, each with a traceback)."""

    def __init__(self, matches: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__()
        self.matches = matches

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.matches(record)


def quiet_resume_hint() -> None:
    for name in ("ray.tune", "ray.tune.tune"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, WithoutRayResumeHint) for f in logger.filters):
            logger.addFilter(WithoutRayResumeHint())


def quiet_trial_tracebacks() -> None:
    for handler in logging.getLogger("ray").handlers:
        if not any(isinstance(f, WithoutTrialTracebacks) for f in handler.filters):
            handler.addFilter(WithoutTrialTracebacks())


def quiet_ray_info() -> None:
    """Ray Tune's INFO lines ("Wrote the latest version of all result files ...") stay in its
    log; only its warnings reach the terminal."""
    logging.getLogger("ray.tune").setLevel(logging.WARNING)


def drop_on_ray_handlers(matches: Callable[[logging.LogRecord], bool], tag: str) -> None:
    """Install a ``Without(matches)`` filter on the handlers Ray logs through (its own and the
    root's), once per ``tag``."""
    for logger in (logging.getLogger("ray"), logging.getLogger()):
        for handler in logger.handlers:
            if not any(getattr(f, "tag", None) == tag for f in handler.filters):
                dropper = Without(matches)
                dropper.tag = tag  # type: ignore[attr-defined]
                handler.addFilter(dropper)
