"""The confirm plan (``confirm_plan.json``): the confirm cases, fixed once made, one generation
per growth of the study; and how a run of the study ends when it does not finish (no Ray
needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from study.spec import StudySpec


class Interrupted(Exception):
    """The study was stopped by a signal; running the same command resumes it."""


class StudyIncomplete(Exception):
    """Ray Tune finished but planned trials are missing or errored (exit 1, not 0)."""


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
