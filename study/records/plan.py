"""The confirm plan (``confirm_plan.json``): the confirm cases, fixed once made, one generation
per growth of the study, and what identifies a case (no Ray needed)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from adaptseg.fileio import atomic_write_text
from study.spec.schema import StudySpec

Case = tuple[str, int, int]  # (arm, rank, seed)
CASE_FIELDS = ("arm", "stage", "rank", "seed")


def plan_key(spec: StudySpec) -> dict[str, Any]:
    """What a confirm plan was made for: a grown study makes a new one."""
    key: dict[str, Any] = {
        "arms": list(spec.arms),
        "num_samples": spec.search.num_samples,
        "top_k": spec.confirm.top_k,
        "seeds": list(spec.confirm.seeds),
    }
    if spec.search.repeats > 1:  # a plan of one repeat is keyed as before repeats existed
        key["repeats"] = spec.search.repeats
    return key


def read_plan(path: Path) -> list[dict[str, Any]]:
    """The plan's generations, oldest first; each ``{"for": plan_key, "cases": [...]}``."""
    if not path.exists():
        return []
    return list(json.loads(path.read_text())["generations"])


def current_cases(path: Path) -> list[dict[str, Any]]:
    plan = read_plan(path)
    return plan[-1]["cases"] if plan else []


def planned(case: dict[str, Any]) -> Case:
    return case["arm"], case["rank"], case["seed"]


def case_key(case: dict[str, Any]) -> tuple:
    """What a confirm case runs: the arm, the seed and the sampled values (not its rank, which
    can change when a grown study ranks its search anew)."""
    params = tuple(sorted((k, v) for k, v in case.items() if k not in CASE_FIELDS))
    return case["arm"], case["seed"], params


def current_ranks(cases: Iterable[dict[str, Any]]) -> dict[tuple, int]:
    """``case_key -> rank`` in the current confirm plan (a case no longer planned: absent)."""
    return {case_key(case): case["rank"] for case in cases}


def write_plan(path: Path, generations: list[dict[str, Any]]) -> None:
    """Save the plan's generations (atomically: a reader never sees half a plan)."""
    atomic_write_text(path, json.dumps({"generations": generations}, indent=2) + "\n")
