"""Which trials ended in error, kept beside the study because Ray's snapshot can miss it.

Ray Tune 2.60 does not re-serialise a trial whose worker process died once its retries are used
up (``TuneController._schedule_trial_stop`` returns before marking the trial for the next
experiment snapshot when its actor is already gone). The snapshot then keeps the trial RUNNING
forever: the driver would call the study interrupted and the tables would show it running.
The ``ErroredTrials`` callback (below) records each trial that Tune gives up on, with
the last line of its error, in ``trial_errors.json``; the driver and the export read it beside
the snapshot. A trial that starts again (a resume with ``resume_errored``) leaves the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray import tune

from adaptseg.fileio import atomic_write_text


def load_errored(errors_file: Path) -> dict[str, dict[str, str]]:
    """``{experiment: {trial_id: error}}``; empty when the file is missing or unreadable."""
    try:
        data = json.loads(errors_file.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def update_errored(errors_file: Path, experiment: str, trial_id: str, error: str | None) -> None:
    """Record ``error`` for the trial, or forget the trial when ``error`` is None."""
    data = load_errored(errors_file)
    trials = data.setdefault(experiment, {})
    if error is None:
        if trials.pop(trial_id, None) is None:
            return
    else:
        trials[trial_id] = error
    atomic_write_text(errors_file, json.dumps(data, indent=2, sort_keys=True))


def effective_status(status: str, trial_id: str, errored: dict[str, str]) -> str:
    """Ray's recorded status, or ERROR for a trial Tune gave up on that the snapshot missed."""
    return "ERROR" if trial_id in errored and status != "TERMINATED" else status


def last_error_line(path: Path) -> str | None:
    """The last line of a trial's error file (the exception), at most 500 characters."""
    try:
        lines = path.read_text().strip().splitlines()
    except OSError:
        return None
    return lines[-1][:500] if lines else None


class ErroredTrials(tune.Callback):
    """Records the trials Tune stops with an error (retries used up), forgets restarted ones."""

    def __init__(self, errors_file: Path, experiment: str) -> None:
        self.errors_file, self.experiment = errors_file, experiment

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = last_error_line(Path(trial.error_file)) if trial.error_file else None
        update_errored(
            self.errors_file, self.experiment, trial.trial_id, error or "error (no message)"
        )

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        update_errored(self.errors_file, self.experiment, trial.trial_id, None)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        update_errored(self.errors_file, self.experiment, trial.trial_id, None)
