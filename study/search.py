"""The searcher of each arm: Ray Tune's OptunaSearch (extended in ``study.private_api``) with
the sampler the spec asks for, on the study's Optuna database.

Two records describe a search: Ray Tune's experiment snapshot (written every few seconds) and
the Optuna study in SQLite (written at once). Ray's is the record; the database is derived from
it (``study.optuna_db``) and rebuilt when it disagrees, so after a kill -9 the two agree again
before anything resumes.
"""

from __future__ import annotations

import optuna
from ray.tune.search import Searcher

from study.private_api import PruneAwareOptunaSearch, ResumableConcurrencyLimiter
from study.space import arm_space
from study.spec import StudySpec


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
) -> Searcher:
    """The searcher of one arm; its Optuna study lives in the study directory's SQLite file.
    With ``resources.max_concurrent_trials`` it comes wrapped in a concurrency limiter (pass
    ``max_concurrent_trials=None`` to Tune then: Tune's own would forget resumed trials)."""
    searcher = PruneAwareOptunaSearch(
        arm_space(spec, arm),
        metric="miou",
        mode="max",
        sampler=make_sampler(spec, concurrent),
        storage=optuna.storages.RDBStorage(storage_url),
        study_name=f"{spec.name}-{arm}",
        max_step=max_step,
    )
    limit = spec.resources.max_concurrent_trials
    return searcher if limit is None else ResumableConcurrencyLimiter(searcher, limit)
