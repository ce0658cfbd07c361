"""Which configs the confirm stage re-runs, and what the study says at the end: pure functions
of plain trial records (no Ray), so they are tested in milliseconds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from study.records.plan import Case, case_key, current_ranks, planned
from study.records.rows import select_rows


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the selection sees it: its config and every row it reported."""

    trial_id: str
    config: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    errored: bool = False

    @property
    def case(self) -> dict[str, Any] | None:
        """The confirm case a confirm trial ran (None for a search trial)."""
        return self.config.get("case")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def pick_top(
    records: Iterable[TrialRecord], searched: Sequence[str], num_steps: int, top_k: int
) -> list[dict[str, Any]]:
    """The ``top_k`` sampled configs of one arm's search: trials that trained to the end,
    ranked by their final select mIoU (a partial trial's score is not comparable), then, if
    too few did, the others by their best mIoU. Errored and diverged trials never qualify."""
    ranked = []
    for record in records:
        select = select_rows(record.rows)
        mious = [r["miou"] for r in select if _finite(r.get("miou"))]
        if record.errored or not select or not mious or not _finite(select[-1].get("miou")):
            continue
        full = (select[-1].get("step") or 0) >= num_steps
        score = select[-1]["miou"] if full else max(mious)
        params = {k: v for k, v in record.config.items() if k in searched}
        ranked.append((full, score, record.trial_id, params))
    ranked.sort(key=lambda r: (r[0], r[1]), reverse=True)
    return [params for *_, params in ranked[:top_k]]


def confirm_cases(
    picks: dict[str | tuple[str, int], list[dict[str, Any]]], seeds: Sequence[int]
) -> list[dict[str, Any]]:
    """Every (arm, rank, seed) to confirm, in the order given (the most expensive arms first,
    so that no long trial runs alone at the end). A pick keyed ``(arm, repeat)`` comes from a
    repeat of the arm's search: from the second on, its cases name the repeat."""
    cases = []
    for key, ranked in picks.items():
        arm, repeat = key if isinstance(key, tuple) else (key, 1)
        extra = {"repeat": repeat} if repeat > 1 else {}
        for rank, params in enumerate(ranked):
            for seed in seeds:
                cases.append({"arm": arm, "stage": "confirm", "rank": rank, "seed": seed,
                              **extra, **params})  # fmt: skip
    return cases


def finished_cases(records: Iterable[TrialRecord]) -> set[tuple]:
    """The keys of the confirm cases that some trial finished without an error."""
    return {case_key(r.case) for r in records if r.case is not None and not r.errored}


def missing_cases(cases: Sequence[dict[str, Any]], records: Iterable[TrialRecord]) -> list[Case]:
    """Planned cases that no trial finished without an error."""
    done = finished_cases(records)
    return [planned(c) for c in cases if case_key(c) not in done]


def unstarted_cases(
    cases: Sequence[dict[str, Any]], records: Iterable[TrialRecord]
) -> list[dict[str, Any]]:
    """Planned cases that no trial stands for at all (an errored one is retried where it is,
    by the next run of its own experiment, never run twice)."""
    present = {case_key(r.case) for r in records if r.case is not None}
    return [c for c in cases if case_key(c) not in present]


def summarise(
    records: Iterable[TrialRecord], cases: Sequence[dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """Per arm: report-split mIoU of the rank-0 config's best-on-select model, over seeds
    (mean, standard deviation or None for one seed, how many seeds). Ranks are those of the
    current plan ``cases`` when given (a grown study may rank its configs anew)."""
    ranks = current_ranks(cases) if cases is not None else None
    per_arm: dict[str, list[float]] = {}
    for record in records:
        case = record.case
        if case is None or record.errored:
            continue
        rank = ranks.get(case_key(case)) if ranks is not None else case.get("rank")
        if rank != 0 or case.get("repeat", 1) != 1:  # the headline: the first search's pick
            continue
        chosen = [
            r["miou"]
            for r in record.rows
            if r.get("split") == "report" and r.get("model") == "best_on_select"
        ]
        if chosen and _finite(chosen[-1]):
            per_arm.setdefault(case["arm"], []).append(float(chosen[-1]))
    return {
        arm: {
            "report_miou_mean": statistics.fmean(values),
            "report_miou_sd": statistics.stdev(values) if len(values) > 1 else None,
            "seeds": len(values),
        }
        for arm, values in per_arm.items()
    }
