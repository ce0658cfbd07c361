"""Ray Tune's records on disk: the experiment snapshot's layout, each trial folder's files, and
the repairs a restore needs after a kill.

An experiment folder holds, per run ("session") of it, ``experiment_state-<session>.json``
(the snapshot: every trial's JSON and its runtime state, the controller's ``runner_data``) and
the searcher's or grid generator's state; each trial folder holds ``result.json`` (one JSON
line per report), ``error.txt`` and ``checkpoint_*/`` folders. Nothing outside this package
reads these names.

``prepare_restore`` readies an experiment for ``Tuner.restore`` over one loaded snapshot:

* sessions whose snapshot cannot be restored are moved into ``.discarded/``. Ray writes the
  snapshot without a temporary file, then the searcher's state; a kill -9 between or during
  those writes leaves a snapshot that is cut off or ahead of its searcher, and Ray resumes from
  the session before it (redoing a little more work, losing none of what the older one holds);
* a trial whose snapshot names a checkpoint Ray has since deleted (a snapshot older than the
  trial's last checkpoints) is pointed at the newest one its folder holds;
* the decisions the controller of a killed run held for trials with a save or a result in
  flight are dropped (``drop_pending_decisions`` says why they are stale).

The snapshot is written back once, atomically, and only when something changed.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptseg.fileio import atomic_write_text

# Ray itself loads only where a pickled checkpoint manager is read: the study folder's paths
# (study.records.folder) import this module, and the command lines answer --help without Ray.
log = logging.getLogger(__name__)
SNAPSHOT = "experiment_state-{}.json"
SESSION_FILES = (
    SNAPSHOT,
    "search_gen_state-{}.json",
    "searcher-state-{}.pkl",
    "basic-variant-state-{}.json",
    "callback-states-{}.pkl",
)
DISCARDED = ".discarded"
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
CHECKPOINT_PREFIX = "checkpoint_"


# --- reading ----------------------------------------------------------------------------------
def sessions(experiment: Path) -> list[str]:
    """The run sessions that wrote a snapshot into ``experiment``, newest first."""
    prefix, suffix = SNAPSHOT.split("{}")
    names = [p.name for p in experiment.glob(SNAPSHOT.format("*"))]
    return sorted((n[len(prefix) : -len(suffix)] for n in names), reverse=True)


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def newest_state(experiment: Path) -> dict[str, Any] | None:
    """The newest readable snapshot (a kill -9 can leave the newest one empty or cut off)."""
    for session in sessions(experiment):
        state = _read_state(experiment / SNAPSHOT.format(session))
        if state is not None and isinstance(state.get("trial_data"), list):
            return state
    return None


@dataclass(frozen=True)
class TrialEntry:
    """One trial as a snapshot holds it: its id, Ray status, config and folder, and the error
    file Ray named for it (None: none yet)."""

    trial_id: str
    status: str
    config: dict[str, Any]
    folder: Path
    error_file: Path | None


def _parse(entry: Any) -> dict[str, Any]:
    return json.loads(entry) if isinstance(entry, str) else entry


def trial_entries(experiment: Path, state: dict[str, Any] | None = None) -> list[TrialEntry]:
    """Every trial of the newest readable snapshot (or of ``state``), in the order Ray holds
    them."""
    state = newest_state(experiment) if state is None else state
    out = []
    for trial_json, runtime_json in (state or {}).get("trial_data", []):
        trial, runtime = _parse(trial_json), _parse(runtime_json)
        folder = experiment / trial.get("relative_logdir", "")
        error = None
        for name in (runtime.get("error_filename"), ERROR_FILE):
            if name and (folder / name).is_file():
                error = folder / name
                break
        out.append(
            TrialEntry(
                trial["trial_id"], trial["status"], trial.get("config") or {}, folder, error
            )
        )
    return out


def result_lines(trial_folder: Path) -> Iterator[dict[str, Any]]:
    """The trial's reports in the order Ray wrote them (a line cut by a hard kill is skipped)."""
    path = trial_folder / RESULT_FILE
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            yield row


def checkpoint_folders(trial_folder: Path, holding: str) -> list[Path]:
    """A trial's checkpoint folders that hold the file ``holding``, oldest first."""
    found = [d for d in trial_folder.glob(f"{CHECKPOINT_PREFIX}*") if (d / holding).is_file()]
    return sorted(found, key=lambda d: d.name)


def is_checkpoint_folder(name: str) -> bool:
    return name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX) :].isdigit()


# --- the checkpoint manager Ray pickles into a trial's runtime state ---------------------------
def checkpoint_manager(runtime: dict) -> Any | None:
    """A trial's checkpoint manager as Ray pickled it into the snapshot (``runtime``: the
    trial's runtime metadata there), or None when the layout is not the expected one."""
    import ray.cloudpickle as cloudpickle

    blob = runtime.get("checkpoint_manager")
    if not isinstance(blob, dict) or blob.get("_type") != "CLOUDPICKLE_FALLBACK":
        return None
    return cloudpickle.loads(bytes.fromhex(blob["value"]))


def store_checkpoint_manager(runtime: dict, manager: Any) -> None:
    import ray.cloudpickle as cloudpickle

    runtime["checkpoint_manager"] = {
        **runtime["checkpoint_manager"],
        "value": cloudpickle.dumps(manager).hex(),
    }


def resume_path(manager: Any) -> str | None:
    """The checkpoint folder a restore resumes the trial from (None: from the start)."""
    latest = getattr(manager, "_latest_checkpoint_result", None)
    return latest.checkpoint.path if latest and latest.checkpoint else None


def point_at(manager: Any, folder: Path | None) -> None:
    """Make the manager resume from ``folder`` (None: from the start), forgetting the
    checkpoints it names that no longer exist."""
    from ray.train._internal.session import _TrainingResult
    from ray.tune import Checkpoint

    latest = manager._latest_checkpoint_result
    kept = [r for r in manager._checkpoint_results if Path(r.checkpoint.path).exists()]
    if folder is None:
        manager._latest_checkpoint_result = None
    else:
        newest = _TrainingResult(Checkpoint(str(folder)), latest.metrics if latest else {})
        if not any(r.checkpoint.path == newest.checkpoint.path for r in kept):
            kept.append(newest)
        manager._latest_checkpoint_result = newest
    manager._checkpoint_results = kept


PENDING_DECISIONS = ("_cached_trial_decisions", "_queued_trial_decisions")


def drop_pending_decisions(runner_data: dict) -> dict[str, str]:
    """Remove the scheduling decisions (CONTINUE, PAUSE, STOP) the controller of a killed run
    held for trials with a save or a result in flight; returns ``{trial_id: decision}``.

    Ray Tune 2.60 writes them into the snapshot and restores them: a trial whose worker died
    while its checkpoint was being saved is held with STOP, and when a rerun retries it
    (``resume_errored``), that stale STOP ends it after its first checkpoint, TERMINATED at a
    step short of its budget. A restored run has no futures in flight, so none applies."""
    dropped: dict[str, str] = {}
    for key in PENDING_DECISIONS:
        decisions = runner_data.get(key)
        if isinstance(decisions, dict) and decisions:
            dropped.update({str(k): str(v) for k, v in decisions.items()})
            runner_data[key] = {}
    return dropped


# --- repairs before a restore -----------------------------------------------------------------
def _load_pickle(path: Path) -> object | None:
    try:
        with path.open("rb") as handle:
            return pickle.load(handle)
    except Exception:  # noqa: BLE001 - any unreadable file means the same: not usable
        return None


def session_problem(experiment: Path, session: str) -> str | None:
    """Why a session's snapshot cannot be restored, or None when it can."""
    state = _read_state(experiment / SNAPSHOT.format(session))
    if state is None or not isinstance(state.get("trial_data"), list):
        return "the snapshot is cut off or unreadable"
    trials = state["trial_data"]
    if any(experiment.glob("search_gen_state-*.json")):  # an experiment with a searcher
        counts = _load_pickle(experiment / f"search_gen_state-{session}.json")
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
            "the run before it",
            experiment.name,
            session,
            problem,
        )
        moved.append(session)
    return moved


def repair_checkpoint_references(
    experiment: Path, state: dict[str, Any], holding: str
) -> list[str]:
    """Point every trial of ``state`` (the snapshot restored from) at a checkpoint that still
    exists; returns the trial ids changed.

    Ray keeps ``num_to_keep`` checkpoints per trial and deletes older ones as new ones come. A
    snapshot older than the last checkpoints can name one that is gone, and Ray then refuses to
    restore the trial on every rerun ("Could not recover from checkpoint as it does not exist
    on storage anymore"). Such a trial is pointed at the newest checkpoint its folder holds (a
    folder with the file ``holding``; newer than the snapshot's: less work is redone), or at
    none (it restarts)."""
    changed = []
    for entry in state["trial_data"]:
        trial, runtime = _parse(entry[0]), _parse(entry[1])
        manager = checkpoint_manager(runtime)
        resumes_from = resume_path(manager) if manager is not None else None
        if resumes_from is None or Path(resumes_from).exists():
            continue
        available = checkpoint_folders(experiment / trial.get("relative_logdir", ""), holding)
        point_at(manager, available[-1] if available else None)
        store_checkpoint_manager(runtime, manager)
        entry[1] = json.dumps(runtime)
        changed.append(trial["trial_id"])
        log.warning(
            "%s: trial %s's snapshot names a checkpoint Ray has since deleted; it resumes from %s",
            experiment.name,
            trial["trial_id"],
            available[-1].name if available else "the start",
        )
    return changed


def forget_pending_decisions(experiment: Path, state: dict[str, Any]) -> dict[str, str]:
    """Drop the scheduling decisions ``state`` holds for trials whose save or result was in
    flight when the run ended; returns ``{trial_id: decision}`` dropped."""
    runner_data = state.get("runner_data")
    if not isinstance(runner_data, dict):
        return {}
    dropped = drop_pending_decisions(runner_data)
    if dropped:
        log.info(
            "%s: dropped the decisions the killed run held for trials in flight (%s)",
            experiment.name,
            ", ".join(f"{t}: {d}" for t, d in sorted(dropped.items())),
        )
    return dropped


@dataclass(frozen=True)
class Restore:
    """What ``prepare_restore`` found and did: whether the experiment can be restored, the
    trials pointed at another checkpoint, the decisions dropped, and the snapshot file it
    rewrote (None: none), which a URI's copy needs uploaded."""

    restorable: bool
    repointed: tuple[str, ...] = ()
    dropped: dict[str, str] = field(default_factory=dict)
    rewritten: str | None = None


def prepare_restore(experiment: Path, local: bool, checkpoint_file: str) -> Restore:
    """Ready ``experiment`` (a folder of Ray's records) for ``Tuner.restore``: the module
    docstring's three repairs over the newest restorable snapshot, loaded once and written back
    at most once. ``local``: the records are Ray's own files (a local or shared folder); behind a
    URI (a mirror here) only the stale decisions are dropped, in the mirror, and the caller
    uploads the rewritten file.

    Ray's ``can_restore`` looks for ``tuner.pkl`` only. Without a usable snapshot (a kill before
    the first one was written, or none survived the repair) Ray "restarts" the experiment with
    ``num_samples=1``, silently: ``restorable`` is then False and the caller starts anew."""
    if local:
        repair_snapshots(experiment)
    names = sessions(experiment)
    if not names:
        return Restore(False)
    path = experiment / SNAPSHOT.format(names[0])
    state = _read_state(path)
    if state is None or not isinstance(state.get("trial_data"), list):
        return Restore(False)
    repointed = repair_checkpoint_references(experiment, state, checkpoint_file) if local else []
    dropped = forget_pending_decisions(experiment, state)
    if repointed or dropped:
        atomic_write_text(path, json.dumps(state))
    return Restore(True, tuple(repointed), dropped, path.name if repointed or dropped else None)
