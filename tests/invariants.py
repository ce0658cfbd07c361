"""What must hold for a study after any sequence of kills and reruns (issue 12): every planned
trial ended exactly once, Optuna agrees with the tables (each trial's state, value and every
report at its step), no row twice, a fixed confirm plan."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd

from study.records.optuna_db import OPTUNA_STATE
from study.records.plan import current_cases
from study.records.rows import ORPHAN_ATTR, RAY_TRIAL_ATTR


def planned_cases(root: Path) -> list[tuple[str, int, int, int]]:
    plan = current_cases(root / "confirm_plan.json")
    return sorted((c["arm"], c.get("repeat", 1), c["rank"], c["seed"]) for c in plan)


def check_study(root: Path, spec: dict) -> dict[str, int]:
    """Assert the invariants on a finished study directory; returns a few counts."""
    trials = pd.read_parquet(root / "tables" / "trials.parquet")
    evals = pd.read_parquet(root / "tables" / "evals.parquet")
    classes = pd.read_parquet(root / "tables" / "class_iou.parquet")
    assert trials["trial_id"].is_unique, "a trial appears twice in trials.parquet"
    assert not (trials["status"] == "running").any(), trials[["arm", "stage", "status"]]
    search = trials[trials["stage"] == "search"]
    samples = spec["search"]["num_samples"]
    repeats = spec["search"].get("repeats", 1)
    for arm in spec["arms"]:
        found = (search["arm"] == arm).sum()
        assert found == samples * repeats, f"{arm}: {found} search trials"
    confirm = trials[trials["stage"] == "confirm"]
    confirm = confirm[confirm["current"]]  # a grown study keeps older generations' trials
    ran = sorted(zip(confirm["arm"], confirm["repeat"], confirm["rank"], confirm["seed"]))
    assert ran == planned_cases(root), "the confirm trials are not the planned ones, once each"
    assert not evals.duplicated(["trial_id", "step", "split", "model"]).any(), "duplicate evals"
    assert not classes.duplicated(["trial_id", "step", "split", "model", "class"]).any()
    storage = f"sqlite:///{root / 'optuna.db'}"
    disagreements, orphans = [], 0
    for arm, repeat in [(a, r) for a in spec["arms"] for r in range(1, repeats + 1)]:
        suffix = "" if repeat == 1 else f"+r{repeat}"
        study = optuna.load_study(study_name=f"{spec['name']}-{arm}{suffix}", storage=storage)
        assert all(t.state.is_finished() for t in study.trials), f"{arm}: Optuna trial unfinished"
        linked = {}
        for trial in study.trials:
            if trial.user_attrs.get(ORPHAN_ATTR):
                assert trial.state.name == "FAIL"
                orphans += 1
            else:
                linked[trial.user_attrs.get(RAY_TRIAL_ATTR)] = trial
        rows = search[(search["arm"] == arm) & (search["repeat"] == repeat)]
        assert set(linked) == set(rows["trial_id"]), f"{arm}: Optuna and Ray name other trials"
        for row in rows.itertuples():
            trial = linked[row.trial_id]
            reports = evals[(evals["trial_id"] == row.trial_id) & (evals["split"] == "select")
                            & evals["miou"].notna()]  # fmt: skip
            expected = {int(r.step): float(r.miou) for r in reports.itertuples()}
            if trial.intermediate_values != expected:
                disagreements.append((arm, row.trial_id, "reports", trial.intermediate_values))
            if trial.state != OPTUNA_STATE[row.status]:
                disagreements.append((arm, row.trial_id, row.status, trial.state.name))
            elif row.status == "completed" and trial.value != row.final_miou:
                disagreements.append((arm, row.trial_id, row.final_miou, trial.value))
    assert not disagreements, f"Optuna disagrees with trials.parquet: {disagreements}"
    return {
        "trials": len(trials), "early_stopped": int((search["status"] == "early_stopped").sum()),
        "orphans": orphans, "evals": len(evals),
    }  # fmt: skip
