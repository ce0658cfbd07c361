"""Ray Tune's OptunaSearch, told the truth about trials that ASHA stopped or that diverged."""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from study.space import arm_space
from study.spec import StudySpec

log = logging.getLogger(__name__)


class PruneAwareOptunaSearch(OptunaSearch):
    """Ray tells Optuna "complete" with a partial score for a trial ASHA stopped early; TPE and
    the importances then treat a 1/9-budget score as final. Here such a trial is PRUNED (its
    last value is already an intermediate value), and a diverged trial (NaN metric) is FAIL."""

    def __init__(self, *args: Any, max_step: int, step_key: str = "step", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_step, self.step_key = max_step, step_key

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if (
            error
            or not result
            or trial_id in self._completed_trials
            or trial_id not in self._ot_trials
        ):
            super().on_trial_complete(trial_id, result, error)
            return
        value = result.get(self.metric)
        state = None
        if value is None or not math.isfinite(value):
            state = TrialState.FAIL
        elif result.get(self.step_key, self.max_step) < self.max_step:
            state = TrialState.PRUNED
        if state is None:
            super().on_trial_complete(trial_id, result, error)
            return
        try:
            self._ot_study.tell(self._ot_trials[trial_id], state=state)
        except Exception as exc:  # noqa: BLE001 - Optuna refuses a second tell; keep going
            log.warning("could not tell Optuna about trial %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)

    def restore(self, checkpoint_path: str) -> None:
        """After a kill -9 the database can hold a RUNNING trial that the restored searcher
        never asked for (it was asked after the last snapshot): nobody will finish it."""
        super().restore(checkpoint_path)
        known = {trial._trial_id for trial in self._ot_trials.values()}
        for trial in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial._trial_id not in known:
                self._ot_study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                log.warning("marked orphan Optuna trial %d failed", trial.number)


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
