"""What a study will run (no Ray needed): the confirm plan's generations, the rules for growing a
study, and the dry-run's description."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from study.folder import StudyPaths
from study.spec import StudySpec, arm_config


class Interrupted(Exception):
    """The study was stopped by a signal; running the same command resumes it."""


class StudyIncomplete(Exception):
    """Ray Tune finished but planned trials are missing or errored (exit 1, not 0)."""


def flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (for naming what changed)."""
    if not isinstance(values, dict):
        return {prefix: values}
    out: dict[str, Any] = {}
    for key, value in values.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


# --- the confirm plan ------------------------------------------------------------------------
def plan_key(spec: StudySpec) -> dict[str, Any]:
    """What a confirm plan was made for: a grown study makes a new one."""
    return {"arms": list(spec.arms), "num_samples": spec.search.num_samples,
            "top_k": spec.confirm.top_k, "seeds": list(spec.confirm.seeds)}  # fmt: skip


def read_plan(path: Path) -> list[dict[str, Any]]:
    """The plan's generations, oldest first; each ``{"for": plan_key, "cases": [...]}``. An
    earlier version saved one list of cases: that is one generation made for an unknown key
    (compatibility, removed in 0.2.0)."""
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    if isinstance(data, list):
        return [{"for": None, "cases": data}]
    return list(data["generations"])


def current_cases(path: Path) -> list[dict[str, Any]]:
    plan = read_plan(path)
    return plan[-1]["cases"] if plan else []


def legacy_fits(cases: list[dict[str, Any]], key: dict[str, Any]) -> bool:
    """Whether a plan saved without its key fits the spec (same arms, seeds and top_k);
    compatibility with plans of one list, removed in 0.2.0."""
    arms = {c["arm"] for c in cases}
    seeds = sorted({c["seed"] for c in cases})
    ranks = {c["rank"] for c in cases}
    return (arms <= set(key["arms"]) and seeds == sorted(key["seeds"])
            and ranks == set(range(key["top_k"])))  # fmt: skip


# --- growing a study --------------------------------------------------------------------------
# Where and how the study runs or reports, not what it computes: free to change on resume
# (resources and concurrency, where Ray runs, checkpoint cadence, retries of a dead worker,
# the comparisons the report shows).
OPERATIONAL = ("ray.", "resources.", "checkpoint.", "max_failures", "compare")


def spec_changes(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Compare a study's saved spec with the one given now: ``(grown, refused)`` key paths.

    Grown: changes that only add work and leave every finished trial comparable: more search
    samples, a larger ``confirm.top_k``, confirm seeds appended, a new arm (and search-space
    ``arms:`` lists that add only new arms). Refused: any other change of what is computed.
    Where and how the study runs (``OPERATIONAL``) may change freely."""
    old_arms, new_arms = set(old.get("arms", {})), set(new.get("arms", {}))
    added = new_arms - old_arms
    grown, refused = [], []
    flat_old, flat_new = flatten(old), flatten(new)
    for key in sorted(set(flat_old) | set(flat_new)):
        before, after = flat_old.get(key), flat_new.get(key)
        if before == after or key.startswith(OPERATIONAL):
            continue
        parts = key.split(".")
        if parts[0] == "arms" and len(parts) > 1 and parts[1] in added:
            grown.append(f"arms.{parts[1]}")
        elif key in ("search.num_samples", "confirm.top_k") and _more(before, after):
            grown.append(key)
        elif key == "confirm.seeds" and _appended(before, after):
            grown.append(key)
        elif (
            parts[:2] == ["search", "space"]
            and parts[-1] == "arms"
            and _adds_only(before, after, added)
        ):
            grown.append(key)
        elif (
            parts[:2] == ["search", "space"]
            and before is None
            and _only_new_arms(flat_new, parts, added)
        ):
            grown.append(".".join(parts[:3]))
        else:
            refused.append(key)
    grown += [f"arms.{arm}" for arm in added]  # an arm of no settings ({}) has no keys
    refused += [f"arms.{arm}" for arm in sorted(old_arms - new_arms)]
    return sorted(set(grown)), sorted(set(refused))


def _more(before: Any, after: Any) -> bool:
    return isinstance(before, int) and isinstance(after, int) and after > before


def _appended(before: Any, after: Any) -> bool:
    return (
        isinstance(before, list) and isinstance(after, list) and len(after) > len(before)
        and after[: len(before)] == before
    )  # fmt: skip


def _adds_only(before: Any, after: Any, added: set[str]) -> bool:
    return (
        isinstance(before, list) and isinstance(after, list) and set(before) <= set(after)
        and set(after) - set(before) <= added
    )  # fmt: skip


def _only_new_arms(flat: dict[str, Any], parts: list[str], added: set[str]) -> bool:
    """A search-space key that is new and limited to new arms."""
    arms = flat.get(".".join([*parts[:3], "arms"]))
    return isinstance(arms, list) and bool(arms) and set(arms) <= added


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
    tables = paths.tables
    if not (tables / "trials.parquet").is_file():
        return (
            "compute: unknown until trials have run (no step time is recorded for this study; "
            "the report's cost section then tracks the estimate)"
        )
    import pandas as pd

    from reports.report import compute_hours
    from study.arms import arm_rows

    trials = pd.read_parquet(tables / "trials.parquet")
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
    from adaptseg.devices import detect, resolve_amp
    from adaptseg.trainer import resolve_device

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
