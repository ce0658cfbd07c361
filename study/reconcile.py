"""Repairs of Ray Tune's own records after a kill, run by the driver before a restore.

* ``repair_snapshots`` before an experiment is restored. Ray Tune writes its experiment snapshot
  (``experiment_state-<session>.json``) without a temporary file, then the searcher's state; a
  kill -9 between or during those writes leaves a snapshot that is cut off or ahead of its
  searcher. Such a session's files are moved into ``.discarded/`` and Ray resumes from the
  session before it (redoing a little more work, losing none of what the older record holds).

* ``repair_checkpoint_references``: a snapshot older than a trial's last checkpoints can name
  one Ray has since deleted; the trial is pointed at the newest one its folder holds.

* ``forget_pending_decisions``: the snapshot of a killed run can hold the decision its
  controller made for a trial whose checkpoint was being saved (a STOP for a trial whose worker
  died); Ray applies it to the retried trial, which then ends after one report. Dropped.

The Optuna database is derived from these records (``study.optuna_db``).
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

from adaptseg.fileio import atomic_write_text
from study.private_api import (
    checkpoint_manager,
    drop_pending_decisions,
    point_at,
    resume_path,
    store_checkpoint_manager,
)

log = logging.getLogger(__name__)
SNAPSHOT = "experiment_state-{}.json"
SESSION_FILES = (
    SNAPSHOT, "search_gen_state-{}.json", "searcher-state-{}.pkl", "basic-variant-state-{}.json",
    "callback-states-{}.pkl",
)  # fmt: skip
DISCARDED = ".discarded"


def sessions(experiment: Path) -> list[str]:
    """The run sessions that wrote a snapshot into ``experiment``, newest first."""
    prefix, suffix = SNAPSHOT.split("{}")
    names = [p.name for p in experiment.glob(SNAPSHOT.format("*"))]
    return sorted((n[len(prefix) : -len(suffix)] for n in names), reverse=True)


def _load_pickle(path: Path) -> object | None:
    try:
        with path.open("rb") as handle:
            return pickle.load(handle)
    except Exception:  # noqa: BLE001 - any unreadable file means the same: not usable
        return None


def session_problem(experiment: Path, session: str) -> str | None:
    """Why a session's snapshot cannot be restored, or None when it can."""
    try:
        state = json.loads((experiment / SNAPSHOT.format(session)).read_text())
        trials = state["trial_data"]
    except (OSError, ValueError, KeyError, TypeError):
        return "the snapshot is cut off or unreadable"
    generator = experiment / f"search_gen_state-{session}.json"
    if any(experiment.glob("search_gen_state-*.json")):  # an experiment with a searcher
        counts = _load_pickle(generator)
        if not isinstance(counts, dict) or "counter" not in counts:
            return "the search generator's state of this session is missing"
        if not (experiment / f"searcher-state-{session}.pkl").is_file():
            return "the searcher's state of this session is missing"
        if len(trials) != counts["counter"]:
            return (
                f"the snapshot holds {len(trials)} trials where its search generator counted "
                f"{counts['counter']}"
            )
    elif any(experiment.glob("basic-variant-state-*.json")):
        if not (experiment / f"basic-variant-state-{session}.json").is_file():
            return "the grid generator's state of this session is missing"
    return None


def repair_snapshots(experiment: Path) -> list[str]:
    """Move the files of sessions whose snapshot cannot be restored (newest first, until one
    can) into ``.discarded/``; returns the sessions moved."""
    moved = []
    for session in sessions(experiment):
        problem = session_problem(experiment, session)
        if problem is None:
            break
        target = experiment / DISCARDED / session
        target.mkdir(parents=True, exist_ok=True)
        for pattern in SESSION_FILES:
            path = experiment / pattern.format(session)
            if path.exists():
                path.rename(target / path.name)
        log.warning(
            "%s: the snapshot of run %s cannot be restored (%s, left by a kill); resuming from "
            "the run before it", experiment.name, session, problem,
        )  # fmt: skip
        moved.append(session)
    return moved


def _checkpoint_dirs(folder: Path) -> list[Path]:
    """A trial's checkpoint folders that hold a complete trainer state, newest last."""
    found = [d for d in folder.glob("checkpoint_*") if (d / "trainer.pt").is_file()]
    return sorted(found, key=lambda d: d.name)


def resume_checkpoints(experiment: Path) -> dict[str, str | None]:
    """Trial id -> the checkpoint folder a restore of ``experiment`` resumes the trial from
    (None: from the start), by its newest snapshot. The checkpoint manager can lag the trial's
    last reported result, so that result's ``checkpoint_dir_name`` is not the answer."""
    names = sessions(experiment)
    if not names:
        return {}
    state = json.loads((experiment / SNAPSHOT.format(names[0])).read_text())
    out: dict[str, str | None] = {}
    for entry in state["trial_data"]:
        trial, runtime = json.loads(entry[0]), json.loads(entry[1])
        out[trial["trial_id"]] = resume_path(checkpoint_manager(runtime))
    return out


def repair_checkpoint_references(experiment: Path) -> list[str]:
    """Point every trial of the newest snapshot at a checkpoint that still exists.

    Ray keeps ``num_to_keep`` checkpoints per trial and deletes older ones as new ones come.
    A snapshot older than the last checkpoints (a kill -9 between the two) can name a
    checkpoint that is gone, and Ray then refuses to restore the trial, on every rerun
    ("Could not recover from checkpoint as it does not exist on storage anymore"). Such a
    trial is pointed at the newest checkpoint its folder holds (newer than the snapshot's:
    less work is redone), or at none (it restarts). Returns the trial ids changed.
    """
    names = sessions(experiment)
    if not names:
        return []
    path = experiment / SNAPSHOT.format(names[0])
    state = json.loads(path.read_text())
    changed = []
    for entry in state["trial_data"]:
        trial, runtime = json.loads(entry[0]), json.loads(entry[1])
        manager = checkpoint_manager(runtime)
        resumes_from = resume_path(manager) if manager is not None else None
        if resumes_from is None or Path(resumes_from).exists():
            continue
        available = _checkpoint_dirs(experiment / trial.get("relative_logdir", ""))
        point_at(manager, available[-1] if available else None)
        store_checkpoint_manager(runtime, manager)
        entry[1] = json.dumps(runtime)
        changed.append(trial["trial_id"])
        log.warning(
            "%s: trial %s's snapshot names a checkpoint Ray has since deleted; it resumes from "
            "%s", experiment.name, trial["trial_id"],
            available[-1].name if available else "the start",
        )  # fmt: skip
    if changed:
        atomic_write_text(path, json.dumps(state))
    return changed


def forget_pending_decisions(experiment: Path) -> dict[str, str]:
    """Drop the scheduling decisions the newest snapshot holds for trials whose save or result
    was in flight when the run ended (study/private_api.py says why they are stale); returns
    ``{trial_id: decision}`` dropped. The snapshot is rewritten only when one was held."""
    names = sessions(experiment)
    if not names:
        return {}
    path = experiment / SNAPSHOT.format(names[0])
    state = json.loads(path.read_text())
    runner_data = state.get("runner_data")
    if not isinstance(runner_data, dict):
        return {}
    dropped = drop_pending_decisions(runner_data)
    if dropped:
        atomic_write_text(path, json.dumps(state))
        log.info(
            "%s: dropped the decisions the killed run held for trials in flight (%s)",
            experiment.name, ", ".join(f"{t}: {d}" for t, d in sorted(dropped.items())),
        )  # fmt: skip
    return dropped
