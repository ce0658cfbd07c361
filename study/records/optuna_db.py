"""The Optuna database (``optuna.db``), derived from Ray Tune's records: checked when a study
starts, after each search and on export, and rebuilt from Ray's experiments when it is missing,
damaged, or does not hold what they say (behind them after a kill -9).

Ray's experiments are the study's record; the database holds the same search history in the
form TPE (growing a study) and optuna-dashboard read: per arm one Optuna study, per Ray trial
one Optuna trial carrying the Ray trial id (``ray_trial_id``), its sampled parameters, its
select-split mIoU per report as intermediate values, and the state the tables give it. A
damaged file is moved aside (``optuna.db.damaged-<time>``), never deleted.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import warnings

import optuna
from optuna.trial import TrialState, create_trial

from study.ray_internals.snapshot import repair_snapshots
from study.records.folder import StudyPaths
from study.records.outcomes import load_errored
from study.records.rows import (
    METRIC_NAME,
    RAY_TRIAL_ATTR,
    Split,
    TrialStatus,
    select_rows,
    split_of,
)
from study.records.trials import experiment_trials, read_rows, trial_status, trial_steps
from study.spec.arms import arm_config
from study.spec.schema import StudySpec
from study.spec.space import arm_space

log = logging.getLogger(__name__)
OPTUNA_STATE = {
    TrialStatus.COMPLETED: TrialState.COMPLETE,
    TrialStatus.EARLY_STOPPED: TrialState.PRUNED,
    TrialStatus.DIVERGED: TrialState.FAIL,
    TrialStatus.ERRORED: TrialState.FAIL,
    TrialStatus.RUNNING: TrialState.RUNNING,
}


def study_name(spec: StudySpec, arm: str, repeat: int = 1) -> str:
    """The Optuna study of one repeat of an arm's search in the database (the searcher writes it
    under this name, the rebuild too)."""
    return f"{spec.name}-{arm}" if repeat == 1 else f"{spec.name}-{arm}+r{repeat}"


def searches(spec: StudySpec) -> list[tuple[str, int]]:
    """Every (arm, repeat) search of the study, in the order the driver runs them."""
    return [(arm, r) for arm in spec.arms for r in range(1, spec.search.repeats + 1)]


def ray_trials(paths: StudyPaths, spec: StudySpec, arm: str, repeat: int = 1) -> list[dict]:
    """One repeat of the arm's search trials in Ray's records, oldest experiment first, each
    with its rows and the state the tables give it (``OPTUNA_STATE``)."""
    experiments = paths.records_dir
    errored = load_errored(paths.errors_file)
    steps = arm_config(spec, arm).num_steps
    out = []
    for name in paths.search_parts(arm, repeat):
        for trial in experiment_trials(experiments / name, errored.get(name)):
            if trial["config"].get("arm") != arm:
                continue  # recorded by Tune without its config (kill -9): never asked for
            rows = read_rows(trial["dir"])
            status = trial_status(trial["status"], rows, trial_steps(trial["config"], steps))
            out.append({**trial, "rows": rows, "state": status})
    return out


def expected(trial: dict) -> tuple[TrialState, float | None]:
    """The Optuna state and value of a Ray trial (``ray_trials``), as the tables give them."""
    state = OPTUNA_STATE[trial["state"]]
    select = select_rows(trial["rows"])
    value = select[-1].get("miou") if select and state == TrialState.COMPLETE else None
    if state == TrialState.COMPLETE and not (
        isinstance(value, int | float) and math.isfinite(value)
    ):
        return TrialState.FAIL, None
    return state, value


def problem(paths: StudyPaths, spec: StudySpec) -> tuple[str, bool] | None:
    """Why the database does not hold what Ray's records say, and whether the file itself is
    missing or unreadable (the user is told then); None when it agrees (also when no search
    has started: OptunaSearch makes the database then)."""
    records = {search: ray_trials(paths, spec, *search) for search in searches(spec)}
    if not any(records.values()):
        return None
    if not paths.optuna_db.is_file():
        return "it is missing", True
    try:
        storage = optuna.storages.RDBStorage(paths.optuna_url)
        try:
            for (arm, repeat), trials in records.items():
                name = study_name(spec, arm, repeat)
                if trials and (why := _study_problem(storage, name, trials)):
                    return why, False
        finally:
            storage.engine.dispose()
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy, sqlite and Optuna errors alike
        return f"it cannot be read ({' '.join(str(exc).split())[:120]})", True
    return None


def _study_problem(
    storage: optuna.storages.RDBStorage, name: str, trials: list[dict]
) -> str | None:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return f"it holds no Optuna study {name}"
    held = {}
    for frozen in storage.get_all_trials(study_id, deepcopy=False):
        ray_id = frozen.user_attrs.get(RAY_TRIAL_ATTR)
        if ray_id is None or ray_id in held:
            return f"its study {name} holds a trial no Ray trial stands for"
        held[ray_id] = frozen
    ray_ids = {t["trial_id"] for t in trials}
    if set(held) != ray_ids:
        return f"its study {name} holds {len(held)} trials where Ray's records hold {len(ray_ids)}"
    for trial in trials:
        state, value = expected(trial)
        frozen = held[trial["trial_id"]]
        if frozen.state != state or (state == TrialState.COMPLETE and frozen.value != value):
            return (
                f"its trial {frozen.number} is {frozen.state.name} where Ray's record says "
                f"{state.name}"
            )
        reported = intermediate_values(trial["rows"])
        if state != TrialState.RUNNING and frozen.intermediate_values != reported:
            return (
                f"its trial {frozen.number} holds {len(frozen.intermediate_values)} reports "
                f"where Ray's record holds {len(reported)}"
            )
    return None


def intermediate_values(rows: list[dict]) -> dict[int, float]:
    """What the searcher reports for each select-split result, the last one included: the
    mIoU at its training step."""
    values = {}
    for row in rows:
        miou, step = row.get("miou"), row.get("step")
        if split_of(row) != Split.SELECT or not isinstance(step, int):
            continue
        if isinstance(miou, int | float) and math.isfinite(miou):
            values[step] = float(miou)
    return values


def _frozen(trial: dict, distributions: dict) -> optuna.trial.FrozenTrial:
    state, value = expected(trial)
    params = {name: trial["config"][name] for name in distributions if name in trial["config"]}
    return create_trial(
        state=state,
        value=value,
        params=params,
        distributions={name: distributions[name] for name in params},
        user_attrs={RAY_TRIAL_ATTR: trial["trial_id"]},
        intermediate_values=intermediate_values(trial["rows"]),
    )


def rebuild(paths: StudyPaths, spec: StudySpec, keep_old: bool) -> int:
    """Write a new database from Ray's records (into a temporary file, then renamed over the
    old one, which ``keep_old`` moves aside first). Returns how many trials it holds."""
    building = paths.optuna_db.with_name(paths.optuna_db.name + ".rebuilding")
    building.unlink(missing_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{building}")
    count = 0
    for arm, repeat in searches(spec):
        trials = ray_trials(paths, spec, arm, repeat)
        if not trials:
            continue
        study = optuna.create_study(
            storage=storage, study_name=study_name(spec, arm, repeat), direction="maximize"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAME])
        distributions = arm_space(spec, arm).distributions
        for trial in trials:
            study.add_trial(_frozen(trial, distributions))
            count += 1
    storage.engine.dispose()
    if keep_old and paths.optuna_db.exists():
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        paths.optuna_db.rename(
            paths.optuna_db.with_name(f"{paths.optuna_db.name}.damaged-{stamp}")
        )
    for suffix in ("-journal", "-wal", "-shm"):
        paths.optuna_db.with_name(paths.optuna_db.name + suffix).unlink(missing_ok=True)
    building.rename(paths.optuna_db)
    return count


def ensure(paths: StudyPaths, spec: StudySpec) -> str | None:
    """Rebuild the database from Ray's records when it does not hold what they say. Returns the
    line to tell the user when the file was missing or unreadable (a damaged one is kept
    beside it); a database that merely lags Ray's records (a kill -9 between the two writes,
    trials asked after Ray's last snapshot) is rebuilt with a log line only."""
    if not paths.remote:  # the snapshots Ray will resume from, as the driver repairs them
        for arm, repeat in searches(spec):
            for name in paths.search_parts(arm, repeat):
                repair_snapshots(paths.records_dir / name)
    found = problem(paths, spec)
    if found is None:
        return None
    why, broken = found
    damaged = broken and paths.optuna_db.exists()
    count = rebuild(paths, spec, keep_old=damaged)
    if not broken:
        log.info("%s: %s; rebuilt from Ray's records (%d trials)", paths.optuna_db, why, count)
        return None
    kept = " (the damaged file is kept beside it as optuna.db.damaged-*)" if damaged else ""
    return (
        f"{paths.optuna_db}: {why}; rebuilt it from Ray's records: {count} trials, "
        f"the search history TPE and the dashboard use{kept}"
    )
