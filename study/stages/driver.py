"""Drives a study on Ray Tune: starts (or joins) Ray, runs each arm's search, then the confirm
stage, and refreshes the tables and the report between them.

What each stage runs is ``study.stages.search`` and ``study.stages.confirm``; how one
experiment is fit or restored is ``study.stages.experiment``; the terminal is
``study.stages.terminal``; the exceptions and exit codes are ``study.errors``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from typing import Any

import optuna
import yaml

from adaptseg.fileio import atomic_write_text
from reports.report import Report
from study.errors import Interrupted
from study.ray_internals import cluster, logs
from study.records.folder import StudyPaths
from study.records.optuna_db import ensure as ensure_optuna_db
from study.records.optuna_db import searches as searches_of
from study.records.rows import flat_config
from study.records.trials import experiment_trials, read_rows, trial_steps
from study.spec.arms import arm_config
from study.spec.schema import StudySpec
from study.stages.confirm import (
    check_confirm_complete,
    confirm_plan,
    run_confirm,
    write_best_configs,
)
from study.stages.diskspace import (
    DiskWatch,
    caused_by_no_space,
    disk_full,
    no_space,
    quiet_no_space_logs,
)
from study.stages.experiment import Session
from study.stages.preflight import check_resources, trial_slots
from study.stages.provenance import write_provenance
from study.stages.search import run_search
from study.stages.selection import TrialRecord, missing_cases, summarise
from study.stages.terminal import Outlook, Progress, Rate
from study.tables.live import refresh

log = logging.getLogger("study.driver")


def start_ray(spec: StudySpec, address: str | None, node_ip: str | None) -> None:
    """Join ``address`` (flag, else YAML) or start a local Ray, pinned to ``node_ip`` if given."""
    logs.quiet_resume_hint()
    quiet_no_space_logs()
    cluster.connect(
        address or spec.ray.address, node_ip or spec.ray.node_ip_address, spec.ray.num_cpus
    )


def gpus_per_trial(spec: StudySpec) -> float:
    """``auto``: 1 when the cluster has GPUs, else 0 (said once). Resources no node can give
    are an error before any trial starts (Tune would leave such trials pending forever)."""
    gpus = check_resources(spec.resources, cluster.nodes(), "the Ray cluster")
    if spec.resources.gpus_per_trial == "auto" and gpus == 0:
        print("no GPU in the Ray cluster: trials run on CPU", file=sys.stderr)
    return gpus


def install_sigterm() -> None:
    """Ray exits on SIGTERM without a final experiment snapshot; turn SIGTERM into SIGINT, which
    Tune handles gracefully. Installed after ``ray.init``, whose own handler it replaces."""

    def forward(signum: int, frame: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    signal.signal(signal.SIGTERM, forward)


def refresh_outputs(paths: StudyPaths, state: str = "running", stage: str = "") -> None:
    """After a stage: Ray's records synced, then the tables, the status and the report."""
    paths.sync_records()
    counts = refresh(paths, state, stage)
    log.debug("tables: %s", counts)
    if counts["errored"]:
        log.warning(
            "%d trial(s) errored (reason in the error column of %s); running the same "
            "command again retries them from their last checkpoint",
            counts["errored"],
            paths.table("trials"),
        )


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
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Ray Tune's new output engine prints its boxes and hints even at verbose=0; the legacy
        # reporter at verbose=0 prints nothing.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        logs.quiet_ray_info()
        logs.quiet_trial_tracebacks()
    start_ray(spec, address, node_ip)
    install_sigterm()
    try:
        gpus = gpus_per_trial(spec)  # before anything is written: a refusal leaves no trace
        slots = trial_slots(spec.resources, cluster.nodes(), gpus)
        paths.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths.spec_file, yaml.safe_dump(resolved, sort_keys=False))
        write_provenance(paths.provenance)
        paths.sync_records()
        if note := ensure_optuna_db(paths, spec):
            print(note, file=sys.stderr)
        session = Session(spec, paths, gpus, slots, verbose, DiskWatch(paths.root))
        try:
            return _run_stages(session)
        except Exception as exc:
            if session.watch.full or caused_by_no_space(exc) or disk_full(paths.root):
                raise no_space(paths.root) from None
            raise
    finally:
        cluster.disconnect()


Search = tuple[str, int]  # (arm, repeat)


def stage_name(search: Search) -> str:
    arm, repeat = search
    return f"search {arm}" if repeat == 1 else f"search {arm} (repeat {repeat})"


def _outlook(spec: StudySpec, paths: StudyPaths, later: list[Search]) -> Outlook:
    """The steps the stages after the current one still have to train, from Ray's records: a
    search trial not started counts the share of its steps that the study's finished search
    trials reached (ASHA stops some), a confirm case its whole budget."""
    finished: dict[Search | str, int] = {}
    reached = budget = 0
    experiments = sorted(paths.records_dir.iterdir()) if paths.records_dir.is_dir() else []
    for experiment in experiments:
        for trial in experiment_trials(experiment):
            config = flat_config(trial["config"])
            arm = config.get("arm")
            if trial["status"] != "TERMINATED" or arm not in spec.arms:
                continue
            search = (arm, int(config.get("repeat", 1)))
            key = "confirm" if config.get("stage") == "confirm" else search
            finished[key] = finished.get(key, 0) + 1
            if key != "confirm":
                steps = trial_steps(config, arm_config(spec, arm).num_steps)
                rows = read_rows(trial["dir"])
                reached += min(max((r.get("step") or 0 for r in rows), default=0), steps)
                budget += steps
    share = reached / budget if budget and spec.scheduler.kind == "asha" else 1.0
    cases = spec.confirm.top_k * len(spec.confirm.seeds) * len(spec.arms) * spec.search.repeats
    longest = max(arm_config(spec, arm).num_steps for arm in spec.arms)
    steps_left = max(cases - finished.get("confirm", 0), 0) * longest
    for search in later:
        left = max(spec.search.num_samples - finished.get(search, 0), 0)
        steps_left += left * arm_config(spec, search[0]).num_steps * share
    return Outlook(steps_left, share)


def _run_stages(session: Session) -> dict[str, Any]:
    """Each arm's search (each of its repeats), then the confirm stage; the tables and report
    after each."""
    spec, paths = session.spec, session.paths
    searches: dict[Search, list[TrialRecord]] = {}
    order = searches_of(spec)
    rate = Rate()
    stage = stage_name(order[0])
    try:
        for index, search in enumerate(order):
            stage = stage_name(search)
            outlook = _outlook(spec, paths, order[index + 1 :])
            steps = arm_config(spec, search[0]).num_steps
            progress = Progress(stage, spec.search.num_samples, steps, rate=rate, outlook=outlook)
            searches[search] = run_search(session, search[0], progress, search[1])
            following = order[index + 1] if index + 1 < len(order) else None
            refresh_outputs(paths, stage=stage_name(following) if following else "confirm")
        stage = "confirm"
        cases = confirm_plan(spec, paths.confirm_plan, searches)
        write_best_configs(spec, paths.best_configs, cases)
        steps = max((arm_config(spec, case["arm"]).num_steps for case in cases), default=1)
        progress = Progress("confirm", len(cases), steps, rate=rate)
        confirm = run_confirm(session, cases, progress) if cases else []
    except Interrupted:
        if session.watch.full or disk_full(paths.root):
            raise  # nothing more is written to a full disk
        try:
            refresh_outputs(paths, "interrupted", stage)
        except Exception as exc:  # noqa: BLE001 - the interruption is what to report
            log.warning("the report could not be rebuilt: %s", exc)
        raise
    done = not missing_cases(cases, confirm)
    refresh_outputs(paths, "complete" if done else "incomplete")
    check_confirm_complete(confirm, cases)
    summary = {
        "arms": summarise(confirm, cases),
        "comparisons": Report(paths.root).summary_pairs(),
    }
    atomic_write_text(paths.summary, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
