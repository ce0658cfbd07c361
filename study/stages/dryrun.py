"""The ``--dry-run`` description: arms, stages, trial counts, resources, compute, fast mode."""

from __future__ import annotations

import pandas as pd

from adaptseg.devices import detect, resolve_amp
from adaptseg.trainer import resolve_device
from reports.cost import compute_hours
from study.records.folder import StudyPaths
from study.spec.arms import arm_config, arm_rows
from study.spec.schema import StudySpec


def describe_plan(spec: StudySpec, paths: StudyPaths) -> str:
    """The --dry-run text: arms, stages, trial counts, resources, steps per trial."""
    lines = [f"study {spec.name} -> {paths.root}"]
    gpus = spec.resources.gpus_per_trial
    lines.append(
        f"resources: {gpus} GPU(s) and {spec.resources.cpus_per_trial:g} CPU(s) per trial, "
        f"at most {spec.resources.max_concurrent_trials or 'as many as fit'} at a time"
    )
    asha = spec.scheduler
    scheduler = (
        f"ASHA (grace {asha.grace_period} steps, reduction {asha.reduction_factor})"
        if asha.kind == "asha"
        else "no early stopping"
    )
    total = 0
    for arm in spec.arms:
        cfg = arm_config(spec, arm)
        params = list(spec.searched(arm))
        confirm = spec.confirm.top_k * len(spec.confirm.seeds)
        total += spec.search.num_samples + confirm
        lines.append(
            f"arm {arm}: search {spec.search.num_samples} trials over "
            f"[{', '.join(params) or 'nothing'}] with {scheduler}; confirm {confirm} trials "
            f"(top {spec.confirm.top_k} x seeds {spec.confirm.seeds}); {cfg.num_steps} steps "
            f"per trial, evaluation every {cfg.eval_every}"
        )
    lines.append(f"total: {total} trials")
    lines.append(compute_line(spec, paths))
    lines += fast_mode_lines(spec)
    return "\n".join(lines)


def compute_line(spec: StudySpec, paths: StudyPaths) -> str:
    """The compute the study as specified will take, from the step times its own trials
    recorded (a study that has run before, is running, or grows); unknown before any did."""
    if not paths.table("trials").is_file():
        return (
            "compute: unknown until trials have run (no step time is recorded for this study; "
            "the report's cost section then tracks the estimate)"
        )
    trials = pd.read_parquet(paths.table("trials"))
    spent, estimate = compute_hours(trials, pd.DataFrame(arm_rows(spec)))
    if estimate is None:
        return f"compute: {spent:.2f} device-hours spent; no estimate until every arm has trained"
    return (
        f"compute: at most {estimate:.2f} device-hours as planned ({spent:.2f} spent), at the "
        f"seconds per step its {len(trials)} recorded trials measured"
    )


def fast_mode_lines(spec: StudySpec) -> list[str]:
    """What the device-dependent keys resolve to on this machine (each trial decides again on
    the machine that runs it, so a cluster of other machines may differ)."""
    lines = []
    for arm in spec.arms:
        cfg = arm_config(spec, arm)
        if cfg.amp != "auto":
            continue
        device = resolve_device(cfg.device)
        capabilities = detect(device)
        lines.append(
            f"amp: auto -> {resolve_amp(cfg.amp, capabilities)} on this machine "
            f"({capabilities.label}; each trial decides on the machine that runs it)"
        )
        break
    return lines
