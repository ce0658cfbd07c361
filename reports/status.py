"""Where a study stands, per arm and stage, from its trials table (the report's first section)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def status_rows(
    trials: pd.DataFrame, arms: list[str], planned: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Per arm and stage: trials done, running, errored and not started (``planned``: stage ->
    arm -> trials the stage plans), and the best select mIoU so far. A confirm trial no longer
    planned by a grown study (``current`` false) is not counted."""
    rows = []
    for arm in arms:
        for stage in ("search", "confirm"):
            mine = trials[(trials["arm"] == arm) & (trials["stage"] == stage)]
            mine = mine[mine["current"].fillna(True).astype(bool)]
            counts = mine["status"].value_counts()
            running, errored = int(counts.get("running", 0)), int(counts.get("errored", 0))
            want = planned[stage].get(arm)
            best = mine["best_miou"].max() if len(mine) else math.nan
            rows.append(
                {
                    "arm": arm,
                    "stage": stage,
                    "done": len(mine) - running - errored,
                    "running": running,
                    "errored": errored,
                    "pending": max(int(want) - len(mine), 0) if want is not None else None,
                    "best": None if pd.isna(best) else float(best),
                }
            )
    return rows
