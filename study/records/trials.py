"""Ray Tune's records of a study's trials, read: each trial's rows (its reports, de-duplicated
after a resume) and its status, config and folder (the newest experiment snapshot). The tables
and the Optuna database are both derived from what these functions return.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from study.ray_internals.snapshot import result_lines, trial_entries
from study.records.outcomes import effective_status, last_error_line
from study.records.rows import TrialStatus, ends_badly, row_key


def as_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def read_rows(trial_dir: Path) -> list[dict[str, Any]]:
    """The trial's reports, de-duplicated: the last restore segment wins for a report key."""
    kept: dict[tuple, dict[str, Any]] = {}
    for row in result_lines(trial_dir):
        key = row_key(row)
        kept.pop(key, None)
        kept[key] = row
    return sorted(
        kept.values(), key=lambda r: (r.get("step") or 0, r.get("training_iteration") or 0)
    )


def experiment_trials(
    experiment: Path, errored: dict[str, str] | None = None, live: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Trial records (id, status, config, folder, error) from the newest experiment snapshot;
    ``errored`` (study/records/outcomes.py) overrides a stale RUNNING status of a trial Tune gave
    up on, and ``live`` (trial id -> Ray status, from a running driver) one the snapshot has not
    caught up with yet."""
    errored, live = errored or {}, live or {}
    trials = []
    for entry in trial_entries(experiment):
        error = last_error_line(entry.error_file) if entry.error_file else None
        recorded = live.get(entry.trial_id, entry.status)
        status = effective_status(recorded, entry.trial_id, errored)
        if status != recorded:  # Tune gave up on it after the snapshot
            error = error or errored[entry.trial_id]
        trials.append(
            {
                "trial_id": entry.trial_id,
                "status": status,
                "config": entry.config,
                "dir": entry.folder,
                "error": error,
            }
        )
    return trials


def finished_count(experiment: Path) -> int:
    """Trials an experiment finished (TERMINATED in its newest snapshot; 0 for none)."""
    return sum(entry.status == "TERMINATED" for entry in trial_entries(experiment))


def finished_in_study(records_dir: Path) -> int:
    """Trials Ray Tune finished in every experiment of a study (from their newest snapshots)."""
    if not records_dir.is_dir():
        return 0
    return sum(finished_count(e) for e in records_dir.iterdir() if e.is_dir())


def trial_steps(config: dict[str, Any], arm_steps: int) -> int:
    """The steps a trial was to train: its own ``num_steps`` where the search sampled one."""
    return as_int(config.get("num_steps")) or arm_steps


def trial_status(ray_status: str, rows: list[dict[str, Any]], max_steps: int) -> TrialStatus:
    if rows and ends_badly(rows[-1]):
        return TrialStatus(rows[-1]["status"])  # reported by the trial itself (NaN, CUDA OOM)
    if ray_status == "ERROR":
        return TrialStatus.ERRORED
    if ray_status != "TERMINATED":
        return TrialStatus.RUNNING
    reached = max((r.get("step") or 0 for r in rows), default=0)
    return TrialStatus.COMPLETED if reached >= max_steps else TrialStatus.EARLY_STOPPED
