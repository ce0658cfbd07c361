"""Ray Tune's OptunaSearch, told the truth about trials that ASHA stopped or that diverged, and
kept in step with Ray's records across kills.

Two records describe a search: Ray Tune's experiment snapshot (written every few seconds) and
the Optuna study in SQLite (written at once). After a kill -9 the snapshot can be older than the
database. The rule (README, "Resume"): **Ray's snapshot decides which trials go on; a trial that
Tune runs again is RUNNING in Optuna**. So on restore a trial that Optuna had finished after the
snapshot is reopened and told again when it ends, and a trial Ray will retry after an error is
reopened too. A report for a trial Optuna has already finished is logged and dropped, never
raised. ``study.reconcile`` makes both records agree once more after every stage.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from study.space import arm_space
from study.spec import StudySpec

log = logging.getLogger(__name__)
RAY_TRIAL_ATTR = "ray_trial_id"  # the Optuna trial's Ray Tune trial id, set when it is asked
ORPHAN_ATTR = "orphan"  # why an Optuna trial that no Ray trial stands for was failed
METRIC_NAME = "miou (select split)"  # the objective, as the dashboard names it


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

    Relies on OptunaSearch's attributes ``_ot_study``, ``_ot_trials``, ``_completed_trials``,
    ``_storage``, ``_study_name`` and ``_sampler`` (ray[tune] is pinned to the 2.60 series)."""

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
        return self._ot_study._storage.get_trial(trial._trial_id).state.is_finished()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._ot_trials:
            log.warning("result for trial %s, never asked for by this searcher: dropped", trial_id)
            return
        if trial_id not in self._completed_trials and self._finished_in_optuna(trial_id):
            log.warning("result for trial %s, which Optuna has finished: dropped", trial_id)
            return
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
        self._ot_study = optuna.load_study(
            study_name=self._study_name, storage=self._storage, sampler=self._sampler,
            pruner=optuna.pruners.NopPruner(),
        )  # fmt: skip
        self._relink()
        for trial_id, trial in self._ot_trials.items():
            if trial_id not in self._completed_trials and reopen(self._storage, trial._trial_id):
                log.warning("trial %s goes on in Ray Tune: reopened its Optuna trial", trial_id)
        known = {trial._trial_id for trial in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen._trial_id in known:
                continue
            ray_id = frozen.user_attrs.get(RAY_TRIAL_ATTR)
            if ray_id is not None and ray_id not in self._ot_trials:
                self._ot_trials[ray_id] = optuna.Trial(self._ot_study, frozen._trial_id)
                continue
            self._ot_study._storage.set_trial_user_attr(
                frozen._trial_id, ORPHAN_ATTR, "asked after the last snapshot of a killed run"
            )
            self._ot_study._storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL)
            log.warning("marked orphan Optuna trial %d failed", frozen.number)
        for trial in self._ot_trials.values():
            trial.study, trial.storage = self._ot_study, self._ot_study._storage
            trial._cached_frozen_trial = trial.storage.get_trial(trial._trial_id)

    def _relink(self) -> None:
        """Point every pickled Optuna trial at the database row of its Ray trial id."""
        trials = self._ot_study.get_trials(deepcopy=False)
        rows = {t.user_attrs[RAY_TRIAL_ATTR]: t._trial_id for t in trials
                if RAY_TRIAL_ATTR in t.user_attrs}  # fmt: skip
        # Compatibility, removed in 0.2.0: databases of 0.1 development builds hold trials
        # without a Ray trial id; the pickled row id is theirs.
        unnamed = {t._trial_id for t in trials if RAY_TRIAL_ATTR not in t.user_attrs}
        for trial_id, trial in list(self._ot_trials.items()):
            row = rows.get(trial_id)
            if row is None and trial._trial_id in unnamed:
                row = trial._trial_id
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
                row = self._ot_study.get_trials(deepcopy=False)[-1]._trial_id
                log.warning("trial %s was missing from the Optuna database: added again", trial_id)
            self._ot_trials[trial_id] = optuna.Trial(self._ot_study, row)


def make_sampler(spec: StudySpec, concurrent: bool) -> optuna.samplers.BaseSampler:
    sampler = spec.search.sampler
    if sampler.kind == "random":
        return optuna.samplers.RandomSampler(seed=sampler.seed)
    liar = concurrent if sampler.constant_liar == "auto" else sampler.constant_liar
    return optuna.samplers.TPESampler(
        seed=sampler.seed,
        multivariate=sampler.multivariate,
        n_startup_trials=sampler.n_startup_trials,
        constant_liar=liar,
    )


def make_search(
    spec: StudySpec, arm: str, storage_url: str, max_step: int, concurrent: bool
) -> PruneAwareOptunaSearch:
    """The searcher of one arm; its Optuna study lives in the study directory's SQLite file."""
    return PruneAwareOptunaSearch(
        arm_space(spec, arm),
        metric="miou",
        mode="max",
        sampler=make_sampler(spec, concurrent),
        storage=optuna.storages.RDBStorage(storage_url),
        study_name=f"{spec.name}-{arm}",
        max_step=max_step,
    )
