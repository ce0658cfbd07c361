"""The confirm stage: each arm's best configs of its search re-run on the same seeds in every
arm, at full budget, without early stopping, and evaluated on the held-out ``report`` split.

The plan (``study.records.plan``) is fixed once made, so a resumed confirm stage runs exactly
the same trials; a grown study appends a generation and reuses every finished case still
planned.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml
from ray import tune

from adaptseg.fileio import atomic_write_text
from study.errors import StudyIncomplete
from study.records.folder import confirm_experiment, part_number
from study.records.plan import plan_key, read_plan, write_plan
from study.records.trials import finished_count
from study.spec.arms import arm_config
from study.spec.schema import StudySpec
from study.stages.experiment import Session, fit_or_restore
from study.stages.selection import (
    TrialRecord,
    confirm_cases,
    missing_cases,
    pick_top,
    unstarted_cases,
)
from study.stages.terminal import Progress

CONFIRM_ATTEMPTS = 3


def confirm_plan(spec: StudySpec, plan_file, searches: dict[str, list[TrialRecord]]) -> list[dict]:
    """The confirm cases: the saved plan's newest generation when it was made for this spec,
    else a new generation made from the whole search, saved before anything runs."""
    plan = read_plan(plan_file)
    key = plan_key(spec)
    if plan and plan[-1]["for"] == key:
        return plan[-1]["cases"]

    # Most expensive arms first (multi-level, then adversarial), so no long trial runs alone
    # at the end while the other slots idle.
    def cost(arm: str) -> tuple[bool, bool]:
        cfg = arm_config(spec, arm)
        return (not cfg.multi_level, not cfg.use_target)

    picks = {
        (arm, repeat): pick_top(
            searches[(arm, repeat)],
            list(spec.searched(arm)),
            arm_config(spec, arm).num_steps,
            spec.confirm.top_k,
        )
        for arm, repeat in sorted(searches, key=lambda search: (cost(search[0]), search[1]))
    }
    cases = confirm_cases(picks, spec.confirm.seeds)
    write_plan(plan_file, [*plan, {"for": key, "cases": cases}])
    return cases


def write_best_configs(spec: StudySpec, folder: Path, cases: list[dict]) -> None:
    """The best config of each arm as a YAML that ``python -m adaptseg.train`` accepts."""
    folder.mkdir(parents=True, exist_ok=True)
    for case in cases:
        if case["rank"] != 0 or case["seed"] != spec.confirm.seeds[0] or "repeat" in case:
            continue
        sampled = {k: v for k, v in case.items() if k in spec.search.space}
        cfg = arm_config(spec, case["arm"], sampled)
        text = yaml.safe_dump(cfg.to_dict(), sort_keys=True)
        atomic_write_text(folder / f"{case['arm']}.yaml", text)


def run_confirm(session: Session, cases: list[dict], progress: Progress) -> list[TrialRecord]:
    """The confirm cases as grids. Every confirm experiment that exists is restored first; the
    cases still missing then run in a further one (``confirm-2``, ``confirm-3`` ...): after a
    kill -9 just after Tune created a grid (it can restore with fewer trials than planned, one
    recorded without its config), or when a grown study plans new cases. So every planned case
    runs exactly once."""
    paths = session.paths
    records: list[TrialRecord] = []

    def grid(name: str) -> Callable[[], tune.Tuner]:
        """A new grid of the cases no experiment has started yet (read when it is made)."""
        todo = unstarted_cases(cases, records)
        return lambda: tune.Tuner(
            session.trainable(),
            param_space={"case": tune.grid_search(todo)},
            tune_config=tune.TuneConfig(
                num_samples=1,
                max_concurrent_trials=session.spec.resources.max_concurrent_trials,
                reuse_actors=True,
            ),
            run_config=session.run_config(name, progress),
        )

    parts = paths.confirm_parts()
    for name in parts:
        progress.finished_before = len(records) + finished_count(paths.records_dir / name)
        records += fit_or_restore(session, name, progress, grid(name))
    number = max((part_number(name) for name in parts), default=0) + 1
    for _ in range(CONFIRM_ATTEMPTS):
        if not unstarted_cases(cases, records):
            break
        name = confirm_experiment(number)
        progress.finished_before = len(records)
        records += fit_or_restore(session, name, progress, grid(name))
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
