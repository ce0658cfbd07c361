"""Reading Ray Tune's experiment records: each trial's rows (its ``result.json``) and its
status, config and folder (the newest experiment snapshot). The tables and the Optuna database
are both derived from what these functions return.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Any

from study.outcomes import effective_status, last_error_line
from study.rows import TrialStatus, ends_badly, row_key


def as_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def read_rows(trial_dir: Path) -> list[dict[str, Any]]:
    """The trial's reports, de-duplicated: the last restore segment wins for a report key."""
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    kept: dict[tuple, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a hard kill
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
    ``errored`` (study/outcomes.py) overrides a stale RUNNING status of a trial Tune gave up on,
    and ``live`` (trial id -> Ray status, from a running driver) one the snapshot has not
    caught up with yet."""
    errored, live = errored or {}, live or {}
    state = None
    for snapshot in sorted(glob.glob(str(experiment / "experiment_state-*.json")), reverse=True):
        try:  # a kill -9 can leave the newest snapshot empty: take the newest readable one
            state = json.loads(Path(snapshot).read_text())
            break
        except (OSError, json.JSONDecodeError):
            continue
    if state is None:
        return []
    trials = []
    for trial_json, runtime_json in state.get("trial_data", []):
        trial = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
        runtime = json.loads(runtime_json) if isinstance(runtime_json, str) else runtime_json
        error = None
        folder = experiment / trial.get("relative_logdir", "")
        for name in (runtime.get("error_filename"), "error.txt"):
            if name and (folder / name).is_file():
                error = last_error_line(folder / name)
                break
        recorded = live.get(trial["trial_id"], trial["status"])
        status = effective_status(recorded, trial["trial_id"], errored)
        if status != recorded:  # Tune gave up on it after the snapshot
            error = error or errored[trial["trial_id"]]
        trials.append({
            "trial_id": trial["trial_id"], "status": status,
            "config": trial.get("config") or {}, "dir": folder, "error": error,
        })  # fmt: skip
    return trials


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
