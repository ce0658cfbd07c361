"""Runs the stages of a study on Ray Tune: a search per arm, then one confirm stage."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import logging
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
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
    CONFIRM_EXPERIMENT,
    Interrupted,
    StudyIncomplete,
    StudyPaths,
    search_experiment,
)
from study.reconcile import reconcile_search, repair_snapshots, sessions
from study.search import make_search
from study.spec import SpecError, StudySpec, arm_config
from study.trainable import train_trial

log = logging.getLogger("study.driver")
FINISHED = {"TERMINATED", "ERROR"}


def start_ray(spec: StudySpec, address: str | None, node_ip: str | None) -> None:
    """Join ``address`` (flag, else YAML) or start a local Ray, pinned to ``node_ip`` if given."""
    address = address or spec.ray.address
    node_ip = node_ip or spec.ray.node_ip_address
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # relative data paths keep working
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
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


def _trainable(spec: StudySpec, gpus: float) -> Any:
    resources = {"cpu": spec.resources.cpus_per_trial, "gpu": gpus}
    return tune.with_resources(
        tune.with_parameters(train_trial, spec=spec.model_dump(mode="json")), resources
    )


def _run_config(spec: StudySpec, paths: StudyPaths, name: str) -> tune.RunConfig:
    return tune.RunConfig(
        name=name,
        storage_path=paths.experiments,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.checkpoint.num_to_keep),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        callbacks=[ErroredTrials(str(paths.root), name)],
        verbose=1,
    )


def _fit(paths: StudyPaths, name: str, trainable: Any, make_tuner) -> tune.ResultGrid:
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
    return grid


def run_search(spec: StudySpec, paths: StudyPaths, arm: str, gpus: float) -> tune.ResultGrid:
    cfg = arm_config(spec, arm)
    concurrent = (spec.resources.max_concurrent_trials or 2) > 1
    trainable = _trainable(spec, gpus)

    def new() -> tune.Tuner:
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
                num_samples=spec.search.num_samples,
                max_concurrent_trials=spec.resources.max_concurrent_trials,
                reuse_actors=True,
            ),
            run_config=_run_config(spec, paths, search_experiment(arm)),
        )

    try:
        return _fit(paths, search_experiment(arm), trainable, new)
    finally:
        if paths.storage is None:
            changed = reconcile_search(
                paths.root, [Path(paths.experiment(search_experiment(arm)))], paths.optuna_url,
                f"{spec.name}-{arm}", cfg.num_steps,
            )  # fmt: skip
            if changed:
                log.info("search %s: %d Optuna trial(s) brought in line with Ray", arm, changed)


def _sampled(config: dict[str, Any], spec: StudySpec) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k in spec.search.space}


def pick_top(spec: StudySpec, arm: str, grid: tune.ResultGrid) -> list[dict[str, Any]]:
    """The arm's top_k configs: trials that trained to the end, ranked by their final select
    mIoU (a partial trial's score is not comparable); if none did, by their best mIoU."""
    num_steps = arm_config(spec, arm).num_steps
    rows = []
    for result in grid:
        if result.error is not None or not result.metrics or result.config is None:
            continue
        history = result.metrics_dataframe
        mious = [m for m in history.get("miou", []) if isinstance(m, float) and math.isfinite(m)]
        if not mious:
            continue
        full = result.metrics.get("step", 0) >= num_steps
        score = result.metrics["miou"] if full else max(mious)
        if not isinstance(score, float) or not math.isfinite(score):
            continue
        rows.append(
            (full, score, result.metrics.get("trial_id", ""), _sampled(result.config, spec))
        )
    rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
    return [params for *_, params in rows[: spec.confirm.top_k]]


def confirm_plan(
    spec: StudySpec, paths: StudyPaths, grids: dict[str, tune.ResultGrid]
) -> list[dict]:
    """Fixed on first use (saved), so a resumed confirm stage runs exactly the same trials."""
    if paths.confirm_plan.exists():
        return json.loads(paths.confirm_plan.read_text())
    cases = []

    # Most expensive arms first (multi-level, then adversarial), so no long trial runs alone
    # at the end while the other slots idle.
    def cost(arm: str) -> tuple[bool, bool]:
        cfg = arm_config(spec, arm)
        return (not cfg.multi_level, not cfg.use_target)

    for arm, grid in sorted(grids.items(), key=lambda item: cost(item[0])):
        for rank, params in enumerate(pick_top(spec, arm, grid)):
            for seed in spec.confirm.seeds:
                cases.append(
                    {"arm": arm, "stage": "confirm", "rank": rank, "seed": seed, **params}
                )
    atomic_write_text(paths.confirm_plan, json.dumps(cases, indent=2) + "\n")
    return cases


def write_best_configs(spec: StudySpec, paths: StudyPaths, cases: list[dict]) -> None:
    """The best config of each arm as a YAML that ``python -m adaptseg.train`` accepts."""
    paths.best_configs.mkdir(parents=True, exist_ok=True)
    for case in cases:
        if case["rank"] != 0 or case["seed"] != spec.confirm.seeds[0]:
            continue
        cfg = arm_config(spec, case["arm"], _sampled(case, spec))
        text = yaml.safe_dump(cfg.to_dict(), sort_keys=True)
        atomic_write_text(paths.best_configs / f"{case['arm']}.yaml", text)


CONFIRM_ATTEMPTS = 3


def _planned(case: dict) -> tuple[str, int, int]:
    return case["arm"], case["rank"], case["seed"]


def _finished_cases(grids: list[tune.ResultGrid]) -> set[tuple[str, int, int]]:
    done = set()
    for grid in grids:
        for result in grid:
            case = (result.config or {}).get("case")
            if result.error is None and case is not None:
                done.add(_planned(case))
    return done


def run_confirm(
    spec: StudySpec, paths: StudyPaths, cases: list[dict], gpus: float
) -> list[tune.ResultGrid]:
    """The confirm cases as a grid. A kill -9 just after Tune created the grid can leave an
    experiment that restores with fewer trials than planned (one trial recorded without its
    config, the other variants never created); the cases still missing then run in a further
    experiment (``confirm-2``, ``confirm-3``), so every planned case runs exactly once."""
    trainable = _trainable(spec, gpus)
    grids: list[tune.ResultGrid] = []
    for attempt in range(CONFIRM_ATTEMPTS):
        name = CONFIRM_EXPERIMENT if attempt == 0 else f"{CONFIRM_EXPERIMENT}-{attempt + 1}"
        missing = [c for c in cases if _planned(c) not in _finished_cases(grids)]
        if attempt and not missing and not tune.Tuner.can_restore(paths.experiment(name)):
            break

        def new(todo: list[dict] = missing, name: str = name) -> tune.Tuner:
            return tune.Tuner(
                trainable,
                param_space={"case": tune.grid_search(todo)},
                tune_config=tune.TuneConfig(
                    num_samples=1,
                    max_concurrent_trials=spec.resources.max_concurrent_trials,
                    reuse_actors=True,
                ),
                run_config=_run_config(spec, paths, name),
            )

        grids.append(_fit(paths, name, trainable, new))
    return grids


def check_confirm_complete(grids: list[tune.ResultGrid], cases: list[dict]) -> None:
    """Every planned confirm trial must have finished: never report an ablation with holes."""
    done = _finished_cases(grids)
    missing = [_planned(c) for c in cases if _planned(c) not in done]
    if missing:
        shown = ", ".join(f"{arm} rank {rank} seed {seed}" for arm, rank, seed in missing)
        raise StudyIncomplete(
            f"confirm stage incomplete: {len(cases) - len(missing)} of {len(cases)} planned "
            f"trials finished; missing: {shown}"
        )


def summarise(grids: list[tune.ResultGrid]) -> dict[str, Any]:
    """Per arm: confirm-stage report-split mIoU of the best-on-select model over seeds."""
    per_arm: dict[str, list[float]] = {}
    for result in (r for grid in grids for r in grid):
        if "case" not in (result.config or {}):
            continue
        if result.error is not None or result.metrics_dataframe is None:
            continue
        rows = result.metrics_dataframe
        chosen = rows[(rows.get("split") == "report") & (rows.get("model") == "best_on_select")]
        if len(chosen):
            per_arm.setdefault(result.config["case"]["arm"], []).append(
                float(chosen["miou"].iloc[-1])
            )
    return {
        arm: {
            "report_miou_mean": statistics.fmean(v),
            "seeds": len(v),
            "report_miou_sd": statistics.stdev(v) if len(v) > 1 else 0.0,
        }  # fmt: skip
        for arm, v in per_arm.items()
    }


def code_version() -> str:
    """The git commit of the installed code (``+dirty`` with local changes), else 'unknown'."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit


def write_provenance(paths: StudyPaths) -> None:
    """Code version and package versions, written once when the study starts."""
    if paths.provenance.exists():
        return
    packages = {}
    for name in ("adaptseg-study", "torch", "torchvision", "ray", "optuna", "numpy", "pyarrow",
                 "plotly"):  # fmt: skip
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    record = {"code_version": code_version(), "python": platform.python_version(),
              "packages": packages, "started": started}  # fmt: skip
    atomic_write_text(paths.provenance, json.dumps(record, indent=2) + "\n")


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
        write_provenance(paths)
        grids = {}
        for arm in spec.arms:
            grids[arm] = run_search(spec, paths, arm, gpus)
            export_tables(paths)
        cases = confirm_plan(spec, paths, grids)
        write_best_configs(spec, paths, cases)
        confirm = run_confirm(spec, paths, cases, gpus) if cases else []
        export_tables(paths)
        check_confirm_complete(confirm, cases)
        if paths.storage is None:
            from reports.build import build

            log.info("report: %s", build(paths.root))
        summary = summarise(confirm)
        atomic_write_text(paths.summary, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return summary
    finally:
        ray.shutdown()
