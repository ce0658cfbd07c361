"""Runs the stages of a study on Ray Tune: a search per arm, then one confirm stage.

The Ray plumbing lives here; what to run next is decided by the pure functions of
``study.selection`` on plain trial records.
"""

from __future__ import annotations

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
from study.export import export
from study.outcomes import effective_status, last_error_line, load_errored, update_errored
from study.plan import (
    Interrupted,
    StudyIncomplete,
    StudyPaths,
    confirm_experiment,
    confirm_parts,
    legacy_fits,
    part_number,
    plan_key,
    read_plan,
    search_experiment,
)
from study.provenance import write_provenance
from study.reconcile import (
    reconcile_search,
    repair_checkpoint_references,
    repair_snapshots,
    sessions,
)
from study.search import make_search
from study.selection import (
    TrialRecord,
    confirm_cases,
    missing_cases,
    pick_top,
    summarise,
    unstarted_cases,
)
from study.spec import SpecError, StudySpec, arm_config
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
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if node_ip:
        kwargs["_node_ip_address"] = node_ip
    if address:
        ray.init(address=address, **kwargs)
    else:  # "local": never attach to a cluster that `ray start` left behind on this machine
        ray.init(address="local", num_cpus=spec.ray.num_cpus, **kwargs)


def gpus_per_trial(spec: StudySpec) -> float:
    """``auto``: 1 when the cluster has GPUs, else 0 (said once). A number no node can give is
    an error before any trial starts (Tune would leave such trials pending forever)."""
    node_gpus = [n.get("Resources", {}).get("GPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    largest = max(node_gpus, default=0.0)
    wanted = spec.resources.gpus_per_trial
    if wanted == "auto":
        if largest == 0:
            print("no GPU in the Ray cluster: trials run on CPU", file=sys.stderr)
        return 1.0 if largest > 0 else 0.0
    if wanted > largest:
        raise SpecError(
            f"resources.gpus_per_trial: {wanted:g} GPU(s) per trial asked for, but the largest "
            f"node of the Ray cluster has {largest:g}"
        )
    return float(wanted)


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


class Progress(tune.Callback):
    """One line per finished trial, with an estimate of the time the stage has left (from the
    training steps per second measured so far; an upper bound where ASHA may stop trials)."""

    def __init__(self, stage: str, planned: int, max_steps: int) -> None:
        self.stage, self.planned, self.max_steps = stage, planned, max_steps
        self.steps: dict[str, int] = {}
        self.ended: set[str] = set()
        self.first: tuple[float, int] | None = None

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:  # fmt: skip
        step = int(result.get("step") or 0)
        self.steps[trial.trial_id] = step
        if self.first is None:
            self.first = (time.monotonic(), sum(self.steps.values()))

    def _left(self) -> str:
        if self.first is None:
            return ""
        started, base = self.first
        rate = (sum(self.steps.values()) - base) / max(time.monotonic() - started, 1e-9)
        running = [s for t, s in self.steps.items() if t not in self.ended]
        remaining = sum(self.max_steps - s for s in running)
        remaining += max(self.planned - len(self.steps), 0) * self.max_steps
        if rate <= 0 or remaining <= 0:
            return ""
        minutes = remaining / rate / 60
        return (
            f"; at most about {minutes:.0f} min left" if minutes >= 1 else "; under a minute left"
        )

    def _say(self, trial: Any, how: str) -> None:
        self.ended.add(trial.trial_id)
        print(f"[{self.stage}] trial {trial.trial_id} {how} ({len(self.ended)}/{self.planned} "
              f"done{self._left()})", file=sys.stderr, flush=True)  # fmt: skip

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        step, miou = result.get("step"), result.get("miou")
        score = f"{miou:.4f}" if isinstance(miou, int | float) else "none"
        if result.get("status") in ("diverged", "errored"):
            how = f"{result['status']} at step {step}"
        elif isinstance(step, int) and step < self.max_steps:
            how = f"stopped early at step {step}, select mIoU {score}"
        elif result.get("split") == "report":
            how = f"finished, report mIoU {score} ({result.get('model')})"
        else:
            how = f"finished at step {step}, select mIoU {score}"
        self._say(trial, how)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(trial, "errored")


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
    spec: StudySpec, paths: StudyPaths, name: str, progress: Progress
) -> tune.RunConfig:
    return tune.RunConfig(
        name=name,
        storage_path=paths.experiments,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.checkpoint.num_to_keep),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        callbacks=[ErroredTrials(str(paths.root), name), progress],
        verbose=1,
    )


def _fit(
    paths: StudyPaths, name: str, trainable: Any, make_tuner: Callable[[], tune.Tuner]
) -> list[TrialRecord]:
    """Fit a new experiment, or restore an existing one (unfinished and errored trials go on)."""
    path = paths.experiment(name)
    restorable = tune.Tuner.can_restore(path)
    if paths.storage is None and restorable:
        # Ray's can_restore looks for tuner.pkl only. Without a usable snapshot (a kill before
        # the first one was written, or none survived repair) Ray "restarts" the experiment
        # with num_samples=1, silently; a new Tuner runs the experiment as planned instead.
        repair_snapshots(Path(path))
        restorable = bool(sessions(Path(path)))
        if restorable:
            repair_checkpoint_references(Path(path))
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


def run_search(spec: StudySpec, paths: StudyPaths, arm: str, gpus: float) -> list[TrialRecord]:
    """The arm's search: its experiments restored (unfinished trials go on), then, when the
    spec asks for more samples than they hold (a grown study), one more experiment for the
    rest, on the same Optuna study (its history is kept)."""
    cfg = arm_config(spec, arm)
    concurrent = (spec.resources.max_concurrent_trials or 2) > 1
    trainable = _trainable(spec, gpus)
    experiments = Path(paths.experiments)

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
                max_concurrent_trials=spec.resources.max_concurrent_trials,
                reuse_actors=True,
            ),
            run_config=_run_config(spec, paths, name, progress),
        )

    progress = Progress(f"search {arm}", spec.search.num_samples, cfg.num_steps)
    records: list[TrialRecord] = []
    names: list[str] = []
    try:
        for part in range(1, 1000):
            name = search_experiment(arm, part)
            samples = spec.search.num_samples - sum(1 for r in records if r.config)
            exists = paths.storage is not None or (experiments / name).is_dir()
            if samples <= 0 and not (exists and tune.Tuner.can_restore(paths.experiment(name))):
                break
            names.append(name)
            records += _fit(paths, name, trainable, lambda n=name, k=samples: new(n, k))
        return records
    finally:
        if paths.storage is None and names:
            changed = reconcile_search(
                paths.root, [experiments / n for n in names], paths.optuna_url,
                f"{spec.name}-{arm}", cfg.num_steps,
            )  # fmt: skip
            if changed:
                log.info("search %s: %d Optuna trial(s) brought in line with Ray", arm, changed)


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
    spec: StudySpec, paths: StudyPaths, cases: list[dict], gpus: float
) -> list[TrialRecord]:
    """The confirm cases as grids. Every confirm experiment that exists is restored first; the
    cases still missing then run in a further one (``confirm-2``, ``confirm-3`` ...): after a
    kill -9 just after Tune created a grid (it can restore with fewer trials than planned, one
    recorded without its config), or when a grown study plans new cases. So every planned case
    runs exactly once."""
    trainable = _trainable(spec, gpus)

    def grid(name: str) -> Callable[[], tune.Tuner]:
        todo = unstarted_cases(cases, records)
        return lambda: tune.Tuner(
            trainable,
            param_space={"case": tune.grid_search(todo)},
            tune_config=tune.TuneConfig(
                num_samples=1,
                max_concurrent_trials=spec.resources.max_concurrent_trials,
                reuse_actors=True,
            ),
            run_config=_run_config(spec, paths, name, progress),
        )

    steps = max((arm_config(spec, case["arm"]).num_steps for case in cases), default=1)
    progress = Progress("confirm", len(cases), steps)
    records: list[TrialRecord] = []
    parts = confirm_parts(Path(paths.experiments)) if paths.storage is None else []
    for name in parts:
        records += _fit(paths, name, trainable, grid(name))
    number = max((part_number(name) for name in parts), default=0) + 1
    for _ in range(CONFIRM_ATTEMPTS):
        if not unstarted_cases(cases, records):
            break
        name = confirm_experiment(number)
        records += _fit(paths, name, trainable, grid(name))
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


def export_tables(paths: StudyPaths) -> None:
    """Tables after each stage (local experiments only; a URI storage is exported by hand)."""
    if paths.storage is None:
        counts = export(paths.root)
        log.info("tables: %s", counts)
        if counts["errored"]:
            log.warning(
                "%d trial(s) errored (reason in the error column of %s); running the same "
                "command again retries them from their last checkpoint",
                counts["errored"], paths.root / "tables" / "trials.parquet",
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
) -> dict[str, Any]:
    start_ray(spec, address, node_ip)
    install_sigterm()
    try:
        gpus = gpus_per_trial(spec)  # before anything is written: a refusal leaves no trace
        paths.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths.spec_file, yaml.safe_dump(resolved, sort_keys=False))
        write_provenance(paths.provenance)
        searches = {}
        for arm in spec.arms:
            searches[arm] = run_search(spec, paths, arm, gpus)
            export_tables(paths)
        cases = confirm_plan(spec, paths, searches)
        write_best_configs(spec, paths, cases)
        confirm = run_confirm(spec, paths, cases, gpus) if cases else []
        export_tables(paths)
        check_confirm_complete(confirm, cases)
        if paths.storage is None:
            from reports.build import build

            log.info("report: %s", build(paths.root))
        summary = summarise(confirm, cases)
        atomic_write_text(paths.summary, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return summary
    finally:
        ray.shutdown()
