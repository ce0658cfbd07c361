"""What each arm of a study is, and which arms it compares: exported as tables for the report.

The report reads these tables and nothing of ``study`` (the direction is study -> reports),
so a study stays reportable whatever later versions rename in the spec.
"""

from __future__ import annotations

import json
from typing import Any

from study.spec import StudySpec, arm_config, arm_role, baseline_arms


def comparisons(spec: StudySpec) -> list[tuple[str, str]]:
    """The pairs ``(a, b)`` whose paired difference a - b is reported: ``compare:`` when the spec
    gives it, else each multi-level arm and each feature-level arm against each single-level
    (output-space) one, every adapted arm against the BatchNorm control, and every arm against
    the source-only arm, in that order and the spec's arm order within each."""
    if spec.compare is not None:
        return [(a, b) for a, b in spec.compare]
    roles = {arm: arm_role(spec, arm) for arm in spec.arms}
    configs = {arm: arm_config(spec, arm) for arm in spec.arms}
    baselines = baseline_arms(spec)
    source_only, control = baselines.get("source_only"), baselines.get("bn_control")
    adapted = [arm for arm, role in roles.items() if role == "adapted"]
    single = [a for a in adapted
              if not configs[a].multi_level and configs[a].adapt_space == "output"]  # fmt: skip
    pairs: list[tuple[str, str]] = []
    for arm in adapted:  # the levels question first: the study exists for it
        cfg = configs[arm]
        if cfg.multi_level or cfg.adapt_space == "feature":
            pairs += [(arm, other) for other in single]
    if control is not None:
        pairs += [(arm, control) for arm in adapted]
    if source_only is not None:
        pairs += [(arm, source_only) for arm in spec.arms if arm != source_only]
    return pairs


def arm_rows(spec: StudySpec) -> list[dict[str, Any]]:
    """One row per arm: its role, levels, adaptation space, steps, what it searches (with the
    distributions as the spec writes them) and how many trials each stage plans."""
    rows = []
    for order, arm in enumerate(spec.arms):
        cfg = arm_config(spec, arm)
        searched = {name: {dist.kind: dist.bounds} for name, dist in spec.searched(arm).items()}
        rows.append({
            "study": spec.name, "arm": arm, "order": order, "role": arm_role(spec, arm),
            "multi_level": cfg.multi_level, "adapt_space": cfg.adapt_space,
            "use_target": cfg.use_target, "num_steps": cfg.num_steps,
            "searched": json.dumps(searched, sort_keys=True),
            "planned_search": spec.search.num_samples,
            "planned_confirm": spec.confirm.top_k * len(spec.confirm.seeds),
        })  # fmt: skip
    return rows


def comparison_rows(spec: StudySpec) -> list[dict[str, Any]]:
    return [
        {"study": spec.name, "order": order, "arm": a, "baseline": b}
        for order, (a, b) in enumerate(comparisons(spec))
    ]
