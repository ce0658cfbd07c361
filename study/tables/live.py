"""The report while a study runs: the tables and ``report.html`` rebuilt as trials finish.

A paper-scale study runs for days; its report should exist from the first finished trial on
and say where the study stands. After a trial finishes (at most once every ``every_s``
seconds, since an export and a report take a few seconds) and at every stage end, the driver
exports the tables, writes ``tables/status.parquet`` (the study's state, its stage and the time
that stage has left) and rebuilds the report, each file written atomically. A failure here is
a warning: the report never stops the study.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from ray import tune

from reports.report import build
from study.records.folder import StudyPaths
from study.records.rows import TrialStatus
from study.tables.export import export, table_schema, write_table

log = logging.getLogger("study.live")
STATUS_FIELDS: list[tuple[str, pa.DataType]] = [
    ("state", pa.string()),
    ("stage", pa.string()),
    ("seconds_left", pa.float64()),
    ("updated", pa.string()),
]
STATES = ("running", "interrupted", "incomplete", "complete")


def write_status(paths: StudyPaths, state: str, stage: str, seconds_left: float | None) -> None:
    """``tables/status.parquet``: one row the report's status section reads."""
    assert state in STATES, state
    updated = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    row = {"state": state, "stage": stage, "seconds_left": seconds_left, "updated": updated}
    write_table([row], table_schema(STATUS_FIELDS), paths.table("status"))


def refresh(
    paths: StudyPaths,
    state: str,
    stage: str = "",
    seconds_left: float | None = None,
    live: dict[str, dict[str, str]] | None = None,
) -> dict[str, int]:
    """Export the tables (from Ray's records as ``paths.records_dir`` holds them), write the
    status and rebuild the report. Returns the export's counts."""
    counts = export(paths, live)
    write_status(paths, state, stage, seconds_left)
    build(paths.root)
    return counts


class LiveReport(tune.Callback):
    """Rebuilds the tables and the report after a trial ends, at most every ``every_s`` s."""

    def __init__(
        self,
        paths: StudyPaths,
        experiment: str,
        progress: Any,
        every_s: float = 120.0,
        sync_every_s: float = 300.0,
    ) -> None:
        self.paths, self.experiment, self.progress = paths, experiment, progress
        self.every_s, self.last = every_s, -float("inf")
        self.sync_every_s, self.synced = sync_every_s, time.monotonic()

    def _ended(self, trials: list, trial: Any, status: str) -> None:
        if time.monotonic() - self.last < self.every_s:
            return
        self.last = time.monotonic()
        # Ray's snapshot lags the trials' real states by up to a snapshot period.
        live = {t.trial_id: t.status for t in trials} | {trial.trial_id: status}
        try:
            if self.paths.remote and self.last - self.synced >= self.sync_every_s:
                self.synced = self.last  # Ray uploads its records no more often than this
                self.paths.sync_records()
            refresh(
                self.paths,
                "running",
                self.progress.stage,
                self.progress.seconds_left(),
                {self.experiment: live},
            )
        except Exception as exc:  # noqa: BLE001 - the report must never stop the study
            log.warning("the live report could not be rebuilt: %s", exc)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trials, trial, "TERMINATED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trials, trial, "ERROR")


def is_complete(paths: StudyPaths) -> bool:
    """Finished, reported, and nothing to retry (an errored trial is retried by a rerun)."""
    needed = (paths.summary, paths.report, paths.table("trials"))
    if not all(path.is_file() for path in needed):
        return False
    statuses = pq.read_table(needed[2], columns=["status"]).column("status").to_pylist()
    return TrialStatus.ERRORED not in statuses and TrialStatus.RUNNING not in statuses
