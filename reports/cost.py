"""What a study cost and will cost, in compute hours, from its trials table."""

from __future__ import annotations

import pandas as pd


def compute_hours(trials: pd.DataFrame, arms: pd.DataFrame | None) -> tuple[float, float | None]:
    """(compute hours spent, the planned study's hours at the measured seconds per step of
    each arm: None until every arm has trained a step, or without the arms table)."""
    spent = float(trials["compute_seconds"].fillna(0).sum()) / 3600
    if arms is None or "planned_search" not in arms or trials.empty:
        return spent, None
    total = 0.0
    for arm in arms.itertuples():
        rows = trials[(trials["arm"] == arm.arm) & trials["compute_seconds"].notna()]
        steps = rows["step_reached"].sum()
        if not steps:
            return spent, None
        per_step = rows["compute_seconds"].sum() / steps
        total += per_step * arm.num_steps * (arm.planned_search + arm.planned_confirm)
    return spent, total / 3600
