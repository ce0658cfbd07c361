"""The search stage of one arm: Ray Tune runs its trials, Optuna (through Ray Tune's
OptunaSearch, extended in ``study.ray_internals.api``) proposes them with the sampler the spec
asks for, on the study's Optuna database, and ASHA stops weak ones.

Two records describe a search: Ray Tune's experiment snapshot (written every few seconds) and
the Optuna study in SQLite (written at once). Ray's is the record; the database is derived from
it (``study.records.optuna_db``) and rebuilt when it disagrees, so after a kill -9 the two agree
again before anything resumes.
"""

from __future__ import annotations

import itertools
import sys

import optuna
from ray import tune
from ray.tune.search import Searcher

from study.errors import Interrupted
from study.ray_internals.api import AskOrderASHA, PruneAwareOptunaSearch, pending_trials
from study.records.folder import search_experiment
from study.records.optuna_db import ensure as ensure_optuna_db
from study.records.optuna_db import study_name
from study.records.trials import finished_count
from study.spec.arms import arm_config
from study.spec.schema import StudySpec
from study.spec.space import arm_space
from study.stages.ask_order import AskOrderLimiter
from study.stages.experiment import Session, fit_or_restore
from study.stages.selection import TrialRecord
from study.stages.terminal import Progress


def make_sampler(
    spec: StudySpec, concurrent: bool, repeat: int = 1
) -> optuna.samplers.BaseSampler:
    """The spec's sampler; the ``repeat``-th run of a search draws from seed + repeat - 1."""
    sampler = spec.search.sampler
    seed = sampler.seed + repeat - 1
    if sampler.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    liar = concurrent if sampler.constant_liar == "auto" else sampler.constant_liar
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=sampler.multivariate,
        n_startup_trials=sampler.n_startup_trials,
        constant_liar=liar,
    )


def make_search(
    spec: StudySpec,
    arm: str,
    storage_url: str,
    max_step: int,
    slots: int,
    total: int,
    repeat: int = 1,
) -> Searcher:
    """The searcher of one repeat of an arm's search, ``total`` trials, ``slots`` at once, in
    ask order (``study.stages.ask_order``); its Optuna study lives in the study directory's
    SQLite file. Pass ``max_concurrent_trials=None`` to Tune: this limiter decides."""
    searcher = PruneAwareOptunaSearch(
        arm_space(spec, arm, repeat),
        metric="miou",
        mode="max",
        sampler=make_sampler(spec, slots > 1, repeat),
        storage=optuna.storages.RDBStorage(storage_url),
        study_name=study_name(spec, arm, repeat),
        max_step=max_step,
    )
    return AskOrderLimiter(searcher, slots, total)


def make_scheduler(spec: StudySpec, max_steps: int, slots: int) -> AskOrderASHA | None:
    """ASHA on the training step, judging each trial against the trials asked ``slots`` or
    more places before it (the same decisions whatever order results arrive in)."""
    if spec.scheduler.kind != "asha":
        return None
    return AskOrderASHA(
        time_attr="step",
        max_t=max_steps,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
        slots=slots,
    )


def run_search(
    session: Session, arm: str, progress: Progress, repeat: int = 1
) -> list[TrialRecord]:
    """One repeat of the arm's search: its experiments restored (unfinished trials go on),
    then, when the spec asks for more samples than they hold (a grown study), one more
    experiment for the rest, on the same Optuna study (its history is kept)."""
    spec, paths = session.spec, session.paths
    steps = arm_config(spec, arm).num_steps

    def new_tuner(name: str, samples: int) -> tune.Tuner:
        search = make_search(spec, arm, paths.optuna_url, steps, session.slots, samples, repeat)
        return tune.Tuner(
            session.trainable(),
            tune_config=tune.TuneConfig(
                metric="miou",
                mode="max",
                search_alg=search,
                scheduler=make_scheduler(spec, steps, session.slots),
                num_samples=samples,
                max_concurrent_trials=None,  # the searcher is limited (make_search)
                reuse_actors=True,
            ),
            run_config=session.run_config(name, progress),
        )

    records: list[TrialRecord] = []
    ran_any = False
    try:
        # One experiment per time the search was grown; the parts that exist are restored in
        # order, and the loop ends at the first part not needed (its samples are all planned).
        for part in itertools.count(1):
            name = search_experiment(arm, part, repeat)
            asked = sum(1 for r in records if r.config)
            samples = spec.search.num_samples - asked
            exists = (paths.records_dir / name).is_dir()
            if samples <= 0 and not (exists and tune.Tuner.can_restore(paths.experiment(name))):
                break
            ran_any = True
            progress.finished_before = asked + finished_count(paths.records_dir / name)
            with pending_trials(session.slots):
                records += fit_or_restore(
                    session, name, progress, lambda n=name, k=samples: new_tuner(n, k)
                )
        return records
    finally:
        # After a finished or interrupted stage only: a crash (a full disk) leaves Ray's
        # records unwritten, and the rerun reconciles from them once they are.
        ended = sys.exc_info()[0] in (None, Interrupted) and not session.watch.full
        if ran_any and ended:
            paths.sync_records()
            ensure_optuna_db(paths, spec)
