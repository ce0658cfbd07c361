"""Runs the stages of a study on Ray Tune: a search per arm, then one confirm stage.

The Ray plumbing lives here; what to run next is decided by the pure functions of
``study.selection`` on plain trial records.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from adaptseg.fileio import atomic_write_text
from study.diskspace import (
    NoSpace,
    caused_by_no_space,
    disk_full,
    error_says_no_space,
    quiet_no_space_logs,
)
from study.folder import StudyPaths, confirm_experiment, part_number, search_experiment
from study.live import LiveReport, refresh
from study.optuna_db import ensure as ensure_optuna_db
from study.outcomes import effective_status, last_error_line, load_errored, update_errored
from study.plan import Interrupted, StudyIncomplete, legacy_fits, plan_key, read_plan
from study.preflight import check_resources, cluster_nodes
from study.provenance import write_provenance
from study.reconcile import (
    SNAPSHOT,
    forget_pending_decisions,
    repair_checkpoint_references,
    repair_snapshots,
    sessions,
)
from study.records import experiment_trials
from study.rows import Split, ends_badly
from study.search import make_search
from study.selection import (
    TrialRecord,
    confirm_cases,
    missing_cases,
    pick_top,
    summarise,
    unstarted_cases,
)
from study.spec import StudySpec, arm_config
from study.trainable import train_trial

log = logging.getLogger("study.driver")
FINISHED = {"TERMINATED", "ERROR"}
CONFIRM_ATTEMPTS = 3


def start_ray(spec: StudySpec, address: str | None, node_ip: str | None) -> None:
    """Join ``address`` (flag, else YAML) or start a local Ray, pinned to ``node_ip`` if given."""
    address = address or spec.ray.address
    node_ip = node_ip or spec.ray.node_ip_address
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # relative data paths keep working
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    for name in ("ray.tune", "ray.tune.tune"):
        logging.getLogger(name).addFilter(WithoutRayResumeHint())
    quiet_no_space_logs()
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if node_ip:
        kwargs["_node_ip_address"] = node_ip
    if address:
        ray.init(address=address, **kwargs)
    else:  # "local": never attach to a cluster that `ray start` left behind on this machine
        ray.init(address="local", num_cpus=spec.ray.num_cpus, **kwargs)


def gpus_per_trial(spec: StudySpec) -> float:
    """``auto``: 1 when the cluster has GPUs, else 0 (said once). Resources no node can give
    are an error before any trial starts (Tune would leave such trials pending forever)."""
    gpus = check_resources(spec.resources, cluster_nodes(), "the Ray cluster")
    if spec.resources.gpus_per_trial == "auto" and gpus == 0:
        print("no GPU in the Ray cluster: trials run on CPU", file=sys.stderr)
    return gpus


class ErroredTrials(tune.Callback):
    """Records the trials Tune stops with an error (retries used up), forgets restarted ones."""

    def __init__(self, study_dir: str, experiment: str) -> None:
        self.study_dir, self.experiment = study_dir, experiment

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = last_error_line(Path(trial.error_file)) if trial.error_file else None
        update_errored(
            Path(self.study_dir), self.experiment, trial.trial_id, error or "error (no message)"
        )

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        update_errored(Path(self.study_dir), self.experiment, trial.trial_id, None)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        update_errored(Path(self.study_dir), self.experiment, trial.trial_id, None)


class DiskWatch(tune.Callback):
    """Stops the run (as Ctrl-C does) when a trial fails for lack of space or the study's disk
    is full; ``full`` then tells the driver why the run stopped."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.full = folder, False

    def _stop(self) -> None:
        if not self.full:
            self.full = True
            os.kill(os.getpid(), signal.SIGINT)

    def _check(self, trial: Any) -> None:
        if error_says_no_space(getattr(trial, "error_file", None)) or disk_full(self.folder):
            self._stop()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:  # fmt: skip
        if disk_full(self.folder):
            self._stop()


def steps_left(planned: int, finished: int, running: dict[str, int], max_steps: int) -> int:
    """The training steps a stage still has to run: what its running trials have left, plus a
    whole trial for each planned one not started yet (an upper bound where ASHA may stop
    trials). ``finished`` counts every finished trial of the stage, those of earlier runs (a
    resume) and of earlier experiments (a grown study) included."""
    not_started = max(planned - finished - len(running), 0)
    remaining = sum(max(max_steps - step, 0) for step in running.values())
    return remaining + not_started * max_steps


def time_left_text(steps: int, steps_per_second: float) -> str:
    if steps <= 0 or steps_per_second <= 0:
        return ""
    minutes = steps / steps_per_second / 60
    return f"about {minutes:.0f} min left" if minutes >= 1 else "under a minute left"


class Progress(tune.Callback):
    """The driver's terminal: one line per finished trial, and every ``every_s`` seconds a line
    on the running trials (steps, rate); each with the time the stage has left, from the steps
    per second measured in this run and only what still has to run."""

    def __init__(self, stage: str, planned: int, max_steps: int, every_s: float = 30.0) -> None:
        self.stage, self.planned, self.max_steps, self.every_s = stage, planned, max_steps, every_s
        self.finished_before = 0  # set before each fit: trials finished in earlier runs
        self.steps: dict[str, int] = {}
        self.ended: set[str] = set()
        self.repairs: set[tuple[str, str]] = set()  # said once each
        self.trained = 0  # steps trained in this run (a restored trial's earlier ones excluded)
        self.started = self.last_line = time.monotonic()

    def _done(self) -> int:
        # Capped: a grown confirm stage's older experiments hold cases no longer planned.
        return min(self.finished_before + len(self.ended), self.planned)

    def _rate(self) -> float:
        return self.trained / max(time.monotonic() - self.started, 1e-9)

    def _steps_left(self) -> int:
        running = {t: s for t, s in self.steps.items() if t not in self.ended}
        return steps_left(self.planned, self._done(), running, self.max_steps)

    def seconds_left(self) -> float | None:
        """The stage's time left (None until a rate was measured)."""
        rate = self._rate()
        return self._steps_left() / rate if rate > 0 else None

    def _left(self) -> str:
        text = time_left_text(self._steps_left(), self._rate())
        return f"; {text}" if text else ""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:  # fmt: skip
        step = int(result.get("step") or 0)
        repair = result.get("repair")
        if repair and (trial.trial_id, repair) not in self.repairs:
            self.repairs.add((trial.trial_id, repair))
            self._print(f"[{self.stage}] trial {trial.trial_id}: {repair}")
        before = self.steps.get(trial.trial_id)
        if before is None:  # a trial never restored trained from 0; a restored one did not
            fresh = result.get("iterations_since_restore") == result.get("training_iteration")
            before = 0 if fresh else step
        self.trained += max(step - before, 0)
        self.steps[trial.trial_id] = step
        if time.monotonic() - self.last_line >= self.every_s:
            running = sorted(
                (s, t) for t, s in self.steps.items() if t not in self.ended
            )  # fmt: skip
            shown = ", ".join(f"{t} step {s}/{self.max_steps}" for s, t in running[:4])
            more = f" and {len(running) - 4} more" if len(running) > 4 else ""
            speed = self._rate()
            rate = f" ({speed:.1f} steps/s)" if speed > 0 else ""
            self._print(
                f"[{self.stage}] running: {shown}{more}{rate}; "
                f"{self._done()}/{self.planned} done{self._left()}"
            )

    def _print(self, line: str) -> None:
        self.last_line = time.monotonic()
        print(line, file=sys.stderr, flush=True)

    def _say(self, trial: Any, how: str) -> None:
        self.ended.add(trial.trial_id)
        self._print(f"[{self.stage}] trial {trial.trial_id} {how} ({self._done()}/{self.planned} "
                    f"done{self._left()})")  # fmt: skip

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        step, miou = result.get("step"), result.get("miou")
        score = f"{miou:.4f}" if isinstance(miou, int | float) else "none"
        if ends_badly(result):
            how = f"{result['status']} at step {step}"
        elif isinstance(step, int) and step < self.max_steps:
            how = f"stopped early at step {step}, select mIoU {score}"
        elif result.get("split") == Split.REPORT:
            how = f"finished, report mIoU {score} ({result.get('model')})"
        else:
            how = f"finished at step {step}, select mIoU {score}"
        self._say(trial, how)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(trial, "errored")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = last_error_line(Path(trial.error_file)) if trial.error_file else None
        self._print(f"[{self.stage}] trial {trial.trial_id} failed ({error or 'no message'}); "
                    "Ray retries it from its last checkpoint")  # fmt: skip


def finished_in(paths: StudyPaths, name: str) -> int:
    """Trials an existing experiment finished in earlier runs (0 for a new one)."""
    experiment = paths.records() / name
    return sum(t["status"] == "TERMINATED" for t in experiment_trials(experiment))


class WithoutTrialTracebacks(logging.Filter):
    """Ray logs each failed trial task with its traceback (kept in the trial's error file); the
    driver's terminal says it in one line instead (``Progress.on_trial_recover``, and the
    trial's ``errored`` line once its retries are used up)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Trial task failed for trial")


class WithoutRayResumeHint(logging.Filter):
    """Ray Tune's "Resume experiment with: Tuner.restore(...)" contradicts the project's own
    resume command (the same study.run command), which the CLI prints."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore(" not in record.getMessage()


def trial_records(grid: tune.ResultGrid) -> list[TrialRecord]:
    """A Ray result grid as plain records (the only place selection meets Ray's types)."""
    records = []
    for result in grid:
        history = result.metrics_dataframe
        rows = history.to_dict("records") if history is not None else []
        trial_id = (result.metrics or {}).get("trial_id", "")
        records.append(TrialRecord(trial_id, result.config or {}, rows, result.error is not None))
    return records


def _trainable(spec: StudySpec, gpus: float) -> Any:
    resources = {"cpu": spec.resources.cpus_per_trial, "gpu": gpus}
    return tune.with_resources(tune.with_parameters(train_trial, spec=spec.dump()), resources)


def _run_config(
    spec: StudySpec, paths: StudyPaths, name: str, progress: Progress, verbose: bool,
    watch: DiskWatch | None,
) -> tune.RunConfig:  # fmt: skip
    """Ray Tune's own status tables only with ``--verbose``: the driver's lines say it all."""
    return tune.RunConfig(
        name=name,
        storage_path=paths.experiments,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.checkpoint.num_to_keep),
        sync_config=tune.SyncConfig(sync_period=spec.checkpoint.sync_every_s),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        callbacks=[
            ErroredTrials(str(paths.root), name),
            progress,
            LiveReport(paths, name, progress),
            *([watch] if watch is not None else []),
        ],
        verbose=2 if verbose else 0,
    )


def _fit_or_restore(
    paths: StudyPaths, name: str, trainable: Any, make_tuner: Callable[[], tune.Tuner]
) -> list[TrialRecord]:
    """Fit a new experiment, or restore an existing one (unfinished and errored trials go on)."""
    path = paths.experiment(name)
    restorable = tune.Tuner.can_restore(path)
    if restorable:
        # Ray's can_restore looks for tuner.pkl only. Without a usable snapshot (a kill before
        # the first one was written, or none survived repair) Ray "restarts" the experiment
        # with num_samples=1, silently; a new Tuner runs the experiment as planned instead.
        # Ray's records are repaired in place where they are files here (local or a shared
        # folder); behind a URI only the stale decisions are (in the mirror, then uploaded).
        records = paths.records() / name
        if not paths.remote:
            repair_snapshots(records)
        restorable = bool(sessions(records))
        if restorable and not paths.remote:
            repair_checkpoint_references(records)
        if restorable and forget_pending_decisions(records) and paths.remote:
            paths.upload(name, SNAPSHOT.format(sessions(records)[0]))
    if restorable:
        tuner = tune.Tuner.restore(
            path, trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = make_tuner()
    grid = tuner.fit()
    errored = load_errored(paths.root).get(name, {})
    statuses = [
        effective_status(t.status, t.trial_id, errored)
        for t in tune.ExperimentAnalysis(path).trials
    ]
    if any(status not in FINISHED for status in statuses):
        raise Interrupted(path)
    return trial_records(grid)


def run_search(
    spec: StudySpec, paths: StudyPaths, arm: str, gpus: float, verbose: bool = False,
    watch: DiskWatch | None = None,
) -> list[TrialRecord]:  # fmt: skip
    """The arm's search: its experiments restored (unfinished trials go on), then, when the
    spec asks for more samples than they hold (a grown study), one more experiment for the
    rest, on the same Optuna study (its history is kept)."""
    cfg = arm_config(spec, arm)
    concurrent = (spec.resources.max_concurrent_trials or 2) > 1
    trainable = _trainable(spec, gpus)
    progress = Progress(f"search {arm}", spec.search.num_samples, cfg.num_steps)

    def new(name: str, samples: int) -> tune.Tuner:
        scheduler = None
        if spec.scheduler.kind == "asha":
            scheduler = ASHAScheduler(
                time_attr="step",
                max_t=cfg.num_steps,
                grace_period=spec.scheduler.grace_period,
                reduction_factor=spec.scheduler.reduction_factor,
            )
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric="miou",
                mode="max",
                search_alg=make_search(spec, arm, paths.optuna_url, cfg.num_steps, concurrent),
                scheduler=scheduler,
                num_samples=samples,
                max_concurrent_trials=None,  # the searcher is limited (study.search)
                reuse_actors=True,
            ),
            run_config=_run_config(spec, paths, name, progress, verbose, watch),
        )

    records: list[TrialRecord] = []
    names: list[str] = []
    try:
        # One experiment per time the search was grown; the parts that exist are restored in
        # order, and the loop ends at the first part not needed (its samples are all planned).
        for part in itertools.count(1):
            name = search_experiment(arm, part)
            samples = spec.search.num_samples - sum(1 for r in records if r.config)
            exists = (paths.records() / name).is_dir()
            if samples <= 0 and not (exists and tune.Tuner.can_restore(paths.experiment(name))):
                break
            names.append(name)
            progress.finished_before = sum(1 for r in records if r.config) + finished_in(
                paths, name
            )
            records += _fit_or_restore(paths, name, trainable, lambda n=name, k=samples: new(n, k))
        return records
    finally:
        # After a finished or interrupted stage only: a crash (a full disk) leaves Ray's
        # records unwritten, and the rerun reconciles from them once they are.
        ended = sys.exc_info()[0] in (None, Interrupted) and not (watch and watch.full)
        if names and ended:
            ensure_optuna_db(paths, spec)


def confirm_plan(
    spec: StudySpec, paths: StudyPaths, searches: dict[str, list[TrialRecord]]
) -> list[dict]:
    """The confirm cases. Fixed once made (saved), so a resumed confirm stage runs exactly the
    same trials; a grown study (more samples, seeds, top_k or arms) appends a new generation,
    made from the whole search, and reuses every finished case that is still planned."""
    plan = read_plan(paths.confirm_plan)
    key = plan_key(spec)
    if plan:
        made_for, cases = plan[-1]["for"], plan[-1]["cases"]
        if made_for == key or (made_for is None and legacy_fits(cases, key)):
            return cases

    # Most expensive arms first (multi-level, then adversarial), so no long trial runs alone
    # at the end while the other slots idle.
    def cost(arm: str) -> tuple[bool, bool]:
        cfg = arm_config(spec, arm)
        return (not cfg.multi_level, not cfg.use_target)

    picks = {
        arm: pick_top(
            searches[arm],
            list(spec.searched(arm)),
            arm_config(spec, arm).num_steps,
            spec.confirm.top_k,
        )  # fmt: skip
        for arm in sorted(searches, key=cost)
    }
    cases = confirm_cases(picks, spec.confirm.seeds)
    plan.append({"for": key, "cases": cases})
    atomic_write_text(paths.confirm_plan, json.dumps({"generations": plan}, indent=2) + "\n")
    return cases


def write_best_configs(spec: StudySpec, paths: StudyPaths, cases: list[dict]) -> None:
    """The best config of each arm as a YAML that ``python -m adaptseg.train`` accepts."""
    paths.best_configs.mkdir(parents=True, exist_ok=True)
    for case in cases:
        if case["rank"] != 0 or case["seed"] != spec.confirm.seeds[0]:
            continue
        sampled = {k: v for k, v in case.items() if k in spec.search.space}
        cfg = arm_config(spec, case["arm"], sampled)
        text = yaml.safe_dump(cfg.to_dict(), sort_keys=True)
        atomic_write_text(paths.best_configs / f"{case['arm']}.yaml", text)


def run_confirm(
    spec: StudySpec, paths: StudyPaths, cases: list[dict], gpus: float, verbose: bool = False,
    watch: DiskWatch | None = None,
) -> list[TrialRecord]:  # fmt: skip
    """The confirm cases as grids. Every confirm experiment that exists is restored first; the
    cases still missing then run in a further one (``confirm-2``, ``confirm-3`` ...): after a
    kill -9 just after Tune created a grid (it can restore with fewer trials than planned, one
    recorded without its config), or when a grown study plans new cases. So every planned case
    runs exactly once."""
    trainable = _trainable(spec, gpus)
    steps = max((arm_config(spec, case["arm"]).num_steps for case in cases), default=1)
    progress = Progress("confirm", len(cases), steps)
    records: list[TrialRecord] = []

    def grid(name: str) -> Callable[[], tune.Tuner]:
        """A new grid of the cases no experiment has started yet (read when it is made)."""
        todo = unstarted_cases(cases, records)
        return lambda: tune.Tuner(
            trainable,
            param_space={"case": tune.grid_search(todo)},
            tune_config=tune.TuneConfig(
                num_samples=1,
                max_concurrent_trials=spec.resources.max_concurrent_trials,
                reuse_actors=True,
            ),
            run_config=_run_config(spec, paths, name, progress, verbose, watch),
        )

    parts = paths.confirm_parts()
    for name in parts:
        progress.finished_before = len(records) + finished_in(paths, name)
        records += _fit_or_restore(paths, name, trainable, grid(name))
    number = max((part_number(name) for name in parts), default=0) + 1
    for _ in range(CONFIRM_ATTEMPTS):
        if not unstarted_cases(cases, records):
            break
        name = confirm_experiment(number)
        progress.finished_before = len(records)
        records += _fit_or_restore(paths, name, trainable, grid(name))
        number += 1
    return records


def check_confirm_complete(records: list[TrialRecord], cases: list[dict]) -> None:
    """Every planned confirm trial must have finished: never report an ablation with holes."""
    missing = missing_cases(cases, records)
    if missing:
        shown = ", ".join(f"{arm} rank {rank} seed {seed}" for arm, rank, seed in missing)
        raise StudyIncomplete(
            f"confirm stage incomplete: {len(cases) - len(missing)} of {len(cases)} planned "
            f"trials finished; missing: {shown}"
        )


def export_tables(paths: StudyPaths, state: str = "running", stage: str = "") -> None:
    """Tables, status and report after each stage."""
    counts = refresh(paths, state, stage)
    log.info("tables: %s", counts)
    if counts["errored"]:
        log.warning(
            "%d trial(s) errored (reason in the error column of %s); running the same "
            "command again retries them from their last checkpoint",
            counts["errored"], paths.tables / "trials.parquet",
        )  # fmt: skip


def install_sigterm() -> None:
    """Ray exits on SIGTERM without a final experiment snapshot; turn SIGTERM into SIGINT, which
    Tune handles gracefully. Installed after ``ray.init``, whose own handler it replaces."""

    def forward(signum: int, frame: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    signal.signal(signal.SIGTERM, forward)


def run_study(
    spec: StudySpec,
    paths: StudyPaths,
    resolved: dict[str, Any],
    address: str | None,
    node_ip: str | None,
    verbose: bool = False,
) -> dict[str, Any]:
    """The whole study; ``verbose`` adds Ray Tune's status tables and Optuna's trial logs."""
    if not verbose:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Ray Tune's new output engine prints its boxes and hints even at verbose=0; the legacy
        # reporter at verbose=0 prints nothing.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        logging.getLogger("ray.tune").setLevel(logging.WARNING)  # "Wrote the latest version..."
        for handler in logging.getLogger("ray").handlers:
            handler.addFilter(WithoutTrialTracebacks())
    start_ray(spec, address, node_ip)
    install_sigterm()
    try:
        gpus = gpus_per_trial(spec)  # before anything is written: a refusal leaves no trace
        paths.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths.spec_file, yaml.safe_dump(resolved, sort_keys=False))
        write_provenance(paths.provenance)
        if note := ensure_optuna_db(paths, spec):
            print(note, file=sys.stderr)
        watch = DiskWatch(paths.root)
        try:
            return _run_stages(spec, paths, gpus, verbose, watch)
        except Exception as exc:
            if watch.full or caused_by_no_space(exc) or disk_full(paths.root):
                raise NoSpace(paths.root) from None
            raise
    finally:
        ray.shutdown()


def _run_stages(
    spec: StudySpec, paths: StudyPaths, gpus: float, verbose: bool, watch: DiskWatch
) -> dict[str, Any]:
    """Each arm's search, then the confirm stage; the tables and report after each."""
    searches = {}
    arms = list(spec.arms)
    stage = f"search {arms[0]}"
    try:
        for index, arm in enumerate(arms):
            stage = f"search {arm}"
            searches[arm] = run_search(spec, paths, arm, gpus, verbose, watch)
            following = arms[index + 1] if index + 1 < len(arms) else None
            export_tables(paths, stage=f"search {following}" if following else "confirm")
        stage = "confirm"
        cases = confirm_plan(spec, paths, searches)
        write_best_configs(spec, paths, cases)
        confirm = run_confirm(spec, paths, cases, gpus, verbose, watch) if cases else []
    except Interrupted:
        if watch.full or disk_full(paths.root):
            raise  # nothing more is written to a full disk
        try:
            export_tables(paths, "interrupted", stage)
        except Exception as exc:  # noqa: BLE001 - the interruption is what to report
            log.warning("the report could not be rebuilt: %s", exc)
        raise
    done = not missing_cases(cases, confirm)
    export_tables(paths, "complete" if done else "incomplete")
    check_confirm_complete(confirm, cases)
    from reports.report import Report

    log.info("report: %s", paths.report)
    summary = {
        "arms": summarise(confirm, cases),
        "comparisons": Report(paths.root).summary_pairs(),
    }
    atomic_write_text(paths.summary, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
