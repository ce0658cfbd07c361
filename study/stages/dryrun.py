"""The ``--dry-run`` description: arms, stages, trial counts, resources, compute, fast mode."""

from __future__ import annotations

import pandas as pd

from adaptseg.devices import detect, resolve_amp
from adaptseg.trainer import resolve_device
from reports.cost import compute_hours
from study.records.folder import StudyPaths
from study.spec.arms import arm_config
from study.spec.schema import StudySpec
from study.stages.cost import cost_lines


def describe_plan(spec: StudySpec, paths: StudyPaths, calibrate: bool = False) -> str:
    """The --dry-run text: arms, stages, trial counts, resources, steps per trial, and what the
    study will cost (``study.stages.cost``; ``calibrate``: time each model here first)."""
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
    repeats = spec.search.repeats
    runs = f" x {repeats} repeats of the search" if repeats > 1 else ""
    total = 0
    for arm in spec.arms:
        cfg = arm_config(spec, arm)
        params = list(spec.searched(arm))
        confirm = spec.confirm.top_k * len(spec.confirm.seeds) * repeats
        total += spec.search.num_samples * repeats + confirm
        lines.append(
            f"arm {arm}: search {spec.search.num_samples} trials{runs} over "
            f"[{', '.join(params) or 'nothing'}] with {scheduler}; confirm {confirm} trials "
            f"(top {spec.confirm.top_k} x seeds {spec.confirm.seeds}{runs}); {cfg.num_steps} "
            f"steps per trial, evaluation every {cfg.eval_every}"
        )
    lines.append(f"total: {total} trials")
    lines += spent_lines(paths)
    lines += cost_lines(spec, paths, calibrate)
    lines += fast_mode_lines(spec)
    return "\n".join(lines)


def spent_lines(paths: StudyPaths) -> list[str]:
    """What a study that has run already spent."""
    if not paths.table("trials").is_file():
        return []
    trials = pd.read_parquet(paths.table("trials"))
    spent, _ = compute_hours(trials, None)
    return [f"spent so far: {spent:.2f} device-hours over {len(trials)} recorded trials"]


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
