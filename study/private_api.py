"""Every use of a private name of Ray Tune or Optuna, in one module.

Both libraries are pinned (``pyproject.toml``) because of what is here;
``tests/test_private_api.py`` states each assumption against the installed versions and fails,
naming it, when an upgrade breaks one. What the project needs and neither library offers publicly:

* Optuna: setting a finished trial back to RUNNING (``reopen``: one row of its RDB schema),
  and a trial's database row id (``Trial._trial_id``, ``FrozenTrial._trial_id``, which its
  storage API takes) and cached copy (``Trial._cached_frozen_trial``).
* Ray Tune's ``OptunaSearch``: its Optuna study, trials and bookkeeping (``_ot_study``,
  ``_ot_trials``, ``_completed_trials``, ``_storage``, ``_study_name``, ``_sampler``,
  ``_setup_study``), which ``PruneAwareOptunaSearch`` extends so that Optuna is told the truth
  about trials ASHA stopped or that diverged, and stays in step with Ray's records across kills.
  The rule (docs/resume.md): Ray's snapshot decides which trials go on; a trial that Tune runs
  again is RUNNING in Optuna. A report for a trial Optuna has already finished is logged and
  dropped, never raised.
* Ray Tune's experiment snapshot: a trial's checkpoint manager, pickled into it
  (``CLOUDPICKLE_FALLBACK``), whose ``_latest_checkpoint_result`` is what a restore resumes
  from, and ``ray.train._internal.session._TrainingResult`` to point it elsewhere.
* Ray Tune's ``ConcurrencyLimiter``: its set of live trials (``live_trials``), which it does
  not save, so a restored one drops the completion of every trial the rerun resumes
  (``ResumableConcurrencyLimiter`` passes those on).
* Ray Tune's controller state in the snapshot (``runner_data``): the decisions it held for
  trials whose save or result was still in flight (``_cached_trial_decisions``,
  ``_queued_trial_decisions``). Ray restores them with the snapshot although the futures they
  belonged to died with the killed run (``drop_pending_decisions`` drops them).
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from study.rows import METRIC_NAME, ORPHAN_ATTR, RAY_TRIAL_ATTR

log = logging.getLogger(__name__)


def row_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The trial's row in the database, which Optuna's storage API takes."""
    return trial._trial_id


def reopen(storage: optuna.storages.RDBStorage, trial_id: int) -> bool:
    """Set a finished Optuna trial back to RUNNING (its value dropped, its intermediate values
    kept). Optuna has no public call for this; it is one row of its schema. Returns whether the
    trial was finished."""
    from optuna.storages._rdb import models

    session = storage.scoped_session()
    try:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
        if not trial.state.is_finished():
            return False
        trial.state = TrialState.RUNNING
        trial.datetime_complete = None
        session.query(models.TrialValueModel).filter(
            models.TrialValueModel.trial_id == trial_id
        ).delete()
        session.commit()
        return True
    finally:
        session.close()


class PruneAwareOptunaSearch(OptunaSearch):
    """Ray tells Optuna "complete" with a partial score for a trial ASHA stopped early; TPE and
    the importances then treat a 1/9-budget score as final. Here such a trial is PRUNED (its
    last value is already an intermediate value), and a diverged trial (NaN metric) is FAIL.

    Relies on OptunaSearch's private attributes (this module's docstring)."""

    def __init__(self, *args: Any, max_step: int, step_key: str = "step", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_step, self.step_key = max_step, step_key
        self._errored: set[str] = set()

    def _setup_study(self, mode: str | list) -> None:
        super()._setup_study(mode)
        # optuna-dashboard and Optuna's plots then say what the value is, not "Objective 0".
        with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use since
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._ot_study.set_metric_names([METRIC_NAME])

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        trial = self._ot_trials.get(trial_id)
        if trial is not None and RAY_TRIAL_ATTR not in trial.user_attrs:
            trial.set_user_attr(RAY_TRIAL_ATTR, trial_id)
        return config

    def _finished_in_optuna(self, trial_id: str) -> bool:
        trial = self._ot_trials[trial_id]
        return self._ot_study._storage.get_trial(row_id(trial)).state.is_finished()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._ot_trials:
            log.warning("result for trial %s, never asked for by this searcher: dropped", trial_id)
            return
        if trial_id not in self._completed_trials and self._finished_in_optuna(trial_id):
            log.warning("result for trial %s, which Optuna has finished: dropped", trial_id)
            return
        # A trial resumed from an older checkpoint reports an iteration again; Optuna keeps
        # the first value and warns, which is expected here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*is already reported", UserWarning)
            super().on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id not in self._ot_trials or trial_id in self._completed_trials:
            return  # never asked here (a snapshot older than the trial) or already told
        if error or not result:
            if error:
                self._errored.add(trial_id)
            self._tell(trial_id, None, TrialState.FAIL if error else TrialState.PRUNED)
            return
        value = result.get(self.metric)
        if value is None or not math.isfinite(value):
            self._tell(trial_id, None, TrialState.FAIL)
        elif result.get(self.step_key, self.max_step) < self.max_step:
            self._tell(trial_id, None, TrialState.PRUNED)
        else:
            self._tell(trial_id, value, TrialState.COMPLETE)

    def _tell(self, trial_id: str, value: float | None, state: TrialState) -> None:
        try:
            self._ot_study.tell(self._ot_trials[trial_id], value, state=state)
        except Exception as exc:  # noqa: BLE001 - already finished elsewhere: never end the run
            log.warning("could not tell Optuna about trial %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)

    def restore(self, checkpoint_path: str) -> None:
        """Restore the snapshot's searcher, then make the database agree with it. Each trial
        the snapshot knows is found in the database by its Ray trial id (a rebuilt database
        has other row ids than the pickled ones) and added again if the database lost it;
        every trial Tune will run again (unfinished in the snapshot, or errored and retried) is
        RUNNING; a RUNNING trial the snapshot never asked for is re-linked by its Ray trial id,
        or failed when it has none. The study object is rebuilt so that no cached state
        predates this."""
        super().restore(checkpoint_path)
        self.__dict__.setdefault("_errored", set())
        self._completed_trials -= self._errored
        self._errored = set()
        self._ot_study = self._load_study()
        self._relink()
        reopened = False
        for trial_id, trial in self._ot_trials.items():
            if trial_id not in self._completed_trials and reopen(self._storage, row_id(trial)):
                reopened = True
                log.warning("trial %s goes on in Ray Tune: reopened its Optuna trial", trial_id)
        if reopened:  # the study's storage cache still holds those trials as finished
            self._ot_study = self._load_study()
        known = {row_id(trial) for trial in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if row_id(frozen) in known:
                continue
            ray_id = frozen.user_attrs.get(RAY_TRIAL_ATTR)
            if ray_id is not None and ray_id not in self._ot_trials:
                self._ot_trials[ray_id] = optuna.Trial(self._ot_study, row_id(frozen))
                continue
            self._ot_study._storage.set_trial_user_attr(
                row_id(frozen), ORPHAN_ATTR, "asked after the last snapshot of a killed run"
            )
            self._ot_study._storage.set_trial_state_values(row_id(frozen), TrialState.FAIL)
            log.warning("marked orphan Optuna trial %d failed", frozen.number)
        for trial in self._ot_trials.values():
            trial.study, trial.storage = self._ot_study, self._ot_study._storage
            trial._cached_frozen_trial = trial.storage.get_trial(row_id(trial))

    def _load_study(self) -> optuna.Study:
        return optuna.load_study(
            study_name=self._study_name, storage=self._storage, sampler=self._sampler,
            pruner=optuna.pruners.NopPruner(),
        )  # fmt: skip

    def _relink(self) -> None:
        """Point every pickled Optuna trial at the database row of its Ray trial id."""
        trials = self._ot_study.get_trials(deepcopy=False)
        rows = {t.user_attrs[RAY_TRIAL_ATTR]: row_id(t) for t in trials
                if RAY_TRIAL_ATTR in t.user_attrs}  # fmt: skip
        # Compatibility, removed in 0.2.0: databases of 0.1 development builds hold trials
        # without a Ray trial id; the pickled row id is theirs.
        unnamed = {row_id(t) for t in trials if RAY_TRIAL_ATTR not in t.user_attrs}
        for trial_id, trial in list(self._ot_trials.items()):
            row = rows.get(trial_id)
            if row is None and row_id(trial) in unnamed:
                row = row_id(trial)
            if row is None:
                frozen = getattr(trial, "_cached_frozen_trial", None)
                params = dict(frozen.params) if frozen is not None else {}
                self._ot_study.add_trial(
                    optuna.trial.create_trial(
                        state=TrialState.RUNNING, params=params,
                        distributions={k: frozen.distributions[k] for k in params},
                        user_attrs={RAY_TRIAL_ATTR: trial_id},
                    )
                )  # fmt: skip
                row = row_id(self._ot_study.get_trials(deepcopy=False)[-1])
                log.warning("trial %s was missing from the Optuna database: added again", trial_id)
            self._ot_trials[trial_id] = optuna.Trial(self._ot_study, row)


# --- Ray Tune's experiment snapshot ------------------------------------------------------------
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


class ResumableConcurrencyLimiter(ConcurrencyLimiter):
    """Tune's ConcurrencyLimiter saves only its searcher, so after a restore it knows no live
    trial and drops the completion of each trial the rerun resumed: the searcher (Optuna, TPE)
    would never hear how they ended. Here a completion the limiter does not know goes to the
    searcher all the same (which ignores trials it never asked for or already finished)."""

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self.live_trials:
            super().on_trial_complete(trial_id, result=result, error=error)
        else:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)


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
