"""The private names of Ray Tune's and Optuna's Python API that the project uses.

What the project needs and neither library offers publicly:

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
* Ray Tune's ASHA: its bracket (``_Bracket``, ``_brackets``, ``_rungs``), which
  ``AskOrderASHA`` makes compare a trial only with the trials asked before it
  (``study.stages.ask_order``).
* Ray Tune's ``Tuner``: the RunConfig a restored one runs with (``_local_tuner``), whose
  callbacks ``use_callbacks`` replaces with this run's.
* Ray Tune's pending-trial limit (``TUNE_MAX_PENDING_TRIALS_PG``, read when a fit starts):
  ``pending_trials`` sets it for a searcher Tune does not recognise as limited.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket
from ray.tune.search.optuna import OptunaSearch

from study.records.rows import METRIC_NAME, ORPHAN_ATTR, RAY_TRIAL_ATTR

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
        try:
            return self._ot_study._storage.get_trial(row_id(trial)).state.is_finished()
        except KeyError:  # a row a rebuilt database does not hold
            return False

    def _report(self, trial_id: str, result: dict) -> None:
        """The result's metric as an intermediate value at its training step (Ray's OptunaSearch
        uses its report count, and never reports a trial's last result)."""
        value, step = result.get(self.metric), result.get(self.step_key)
        if not (isinstance(value, int | float) and math.isfinite(value) and isinstance(step, int)):
            return
        # A trial resumed from an older checkpoint reports a step again; Optuna keeps the first
        # value and warns, which is expected here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*is already reported", UserWarning)
            self._ot_trials[trial_id].report(value, step)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._ot_trials:
            log.warning("result for trial %s, never asked for by this searcher: dropped", trial_id)
            return
        if trial_id in self._completed_trials or self._finished_in_optuna(trial_id):
            log.warning("result for trial %s, which Optuna has finished: dropped", trial_id)
            return
        self._report(trial_id, result)

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
        if not self._finished_in_optuna(trial_id):
            self._report(trial_id, result)  # the last report is an intermediate value too
        value = result.get(self.metric)
        if value is None or not math.isfinite(value):
            self._tell(trial_id, None, TrialState.FAIL)
        elif result.get(self.step_key, self.max_step) < self.max_step:
            self._tell(trial_id, None, TrialState.PRUNED)
        else:
            self._tell(trial_id, value, TrialState.COMPLETE)

    def _tell(self, trial_id: str, value: float | None, state: TrialState) -> None:
        if self._finished_in_optuna(trial_id):  # a rebuild from Ray's records told it already
            self._completed_trials.add(trial_id)
            return
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
            study_name=self._study_name,
            storage=self._storage,
            sampler=self._sampler,
            pruner=optuna.pruners.NopPruner(),
        )

    def _relink(self) -> None:
        """Point every pickled Optuna trial at the database row of its Ray trial id."""
        trials = self._ot_study.get_trials(deepcopy=False)
        rows = {
            t.user_attrs[RAY_TRIAL_ATTR]: row_id(t)
            for t in trials
            if RAY_TRIAL_ATTR in t.user_attrs
        }
        for trial_id, trial in list(self._ot_trials.items()):
            row = rows.get(trial_id)
            if row is None:
                frozen = getattr(trial, "_cached_frozen_trial", None)
                params = dict(frozen.params) if frozen is not None else {}
                self._ot_study.add_trial(
                    optuna.trial.create_trial(
                        state=TrialState.RUNNING,
                        params=params,
                        distributions={k: frozen.distributions[k] for k in params},
                        user_attrs={RAY_TRIAL_ATTR: trial_id},
                    )
                )
                row = row_id(self._ot_study.get_trials(deepcopy=False)[-1])
                log.warning("trial %s was missing from the Optuna database: added again", trial_id)
            self._ot_trials[trial_id] = optuna.Trial(self._ot_study, row)


@contextmanager
def pending_trials(slots: int) -> Iterator[None]:
    """Let Tune hold ``slots`` trials pending at once while a search fits. Tune keeps one
    pending trial for a searcher that is not its own ``ConcurrencyLimiter`` (the
    ``AskOrderLimiter`` is not): the slots would fill one worker start after another, and a
    pending trial would take over a finished trial's reused worker, so short trials on a
    cluster would all run on the node whose worker started first."""
    key, before = "TUNE_MAX_PENDING_TRIALS_PG", os.environ.get("TUNE_MAX_PENDING_TRIALS_PG")
    os.environ[key] = str(max(int(slots), 1))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def use_callbacks(tuner: Any, callbacks: list) -> None:
    """Run a restored experiment with ``callbacks``. ``Tuner.restore`` unpickles the RunConfig
    the experiment was first made with, callbacks included (ray#38894): without this a resumed
    stage would print through stale copies of the first run's objects (counting from zero,
    with the first run's folders), and the driver would never hear what they saw."""
    tuner._local_tuner.get_run_config().callbacks = list(callbacks)


class _AskOrderBracket(_Bracket):
    """Tune's ASHA bracket, comparing a trial at a rung only with the trials asked at least
    ``slots`` places before it (``order``: trial id -> ask index)."""

    def __init__(self, *args: Any, order: dict[str, int], slots: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.order, self.slots = order, slots

    def on_result(self, trial: Any, cur_iter: int, cur_rew: float | None) -> str:
        index = self.order.get(trial.trial_id, 0)
        before = {t for t, i in self.order.items() if i <= index - self.slots}
        action = TrialScheduler.CONTINUE
        for milestone, recorded in self._rungs:
            if cur_iter >= milestone and trial.trial_id in recorded and not self._stop_last_trials:
                break
            if cur_iter < milestone or trial.trial_id in recorded:
                continue
            cutoff = self.cutoff({t: v for t, v in recorded.items() if t in before})
            if cutoff is not None and cur_rew is not None and cur_rew < cutoff:
                action = TrialScheduler.STOP
            if cur_rew is not None:
                recorded[trial.trial_id] = cur_rew
            break
        return action


class AskOrderASHA(AsyncHyperBandScheduler):
    """Ray Tune's ASHA (one bracket), deciding on the results, not on their arrival order: a
    trial is compared at a rung only with trials asked ``slots`` or more places before it,
    which ended before it started (``study.stages.ask_order`` says why that holds). Ask order
    is the order Tune adds trials in. Relies on ASHA's private ``_Bracket``, ``_brackets``,
    ``_rungs`` and ``_stop_last_trials``."""

    def __init__(self, *args: Any, slots: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.order: dict[str, int] = {}
        bracket = self._brackets[0]
        self._brackets = [
            _AskOrderBracket(
                kwargs["grace_period"],
                kwargs["max_t"],
                kwargs["reduction_factor"],
                0,
                stop_last_trials=bracket._stop_last_trials,
                order=self.order,
                slots=max(int(slots), 1),
            )
        ]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self.order.setdefault(trial.trial_id, len(self.order))
        super().on_trial_add(tune_controller, trial)
