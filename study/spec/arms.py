"""What each arm of a study is: its trainer config, its role, the arms it is compared with,
and the rows the ``arms`` and ``comparisons`` tables hold (the report reads those tables and
nothing of ``study``, so a study stays reportable whatever later versions rename in the spec).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adaptseg.config import TrainConfig, build_config
from study.spec.schema import StudySpec

# Train keys the data section sets for every arm.
DATA_KEYS = ("source", "source_root", "source_list", "target", "target_root", "target_list")


def data_settings(spec: StudySpec) -> dict[str, Any]:
    """The train keys that the data section stands for."""
    if spec.data.synthetic is not None:
        root = Path(spec.data.synthetic.root)
        return {
            "source": "gta5",
            "source_root": str(root / "gta5"),
            "target": "cityscapes",
            "target_root": str(root / "cityscapes"),
        }
    assert spec.data.source is not None and spec.data.target is not None
    return {
        "source": spec.data.source.kind,
        "source_root": spec.data.source.root,
        "source_list": spec.data.source.list_file,
        "target": spec.data.target.kind,
        "target_root": spec.data.target.root,
        "target_list": spec.data.target.list_file,
    }


def arm_config(
    spec: StudySpec, arm: str, sampled: dict[str, Any] | None = None, seed: int | None = None
) -> TrainConfig:
    """Base train keys, then the data section, then sampled values, then the arm's settings."""
    values = {**spec.train, **data_settings(spec), **(sampled or {}), **spec.arms[arm]}
    if seed is not None:
        values["seed"] = seed
    return build_config(values, origin=f"arm {arm}")


def arm_role(spec: StudySpec, arm: str) -> str:
    """What an arm does, whatever its name: ``source_only`` (target images never pass through
    G), ``bn_control`` (they pass, moving BatchNorm statistics, but no adversarial loss reaches
    G), else ``adapted``."""
    cfg = arm_config(spec, arm)
    if not cfg.use_target:
        return "source_only"
    weights = [("lambda_adv_main", cfg.lambda_adv_main)]
    if cfg.multi_level:
        weights.append(("lambda_adv_aux", cfg.lambda_adv_aux))
    silent = all(value == 0 and key not in spec.searched(arm) for key, value in weights)
    return "bn_control" if silent else "adapted"


def baseline_arms(spec: StudySpec) -> dict[str, str]:
    """The arms the ablation compares against, found by what they do (any names work): the
    first ``source_only`` and the first ``bn_control`` arm (``arm_role``)."""
    roles: dict[str, str] = {}
    for arm in spec.arms:
        role = arm_role(spec, arm)
        if role != "adapted":
            roles.setdefault(role, arm)
    return roles


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
    single = [
        a for a in adapted if not configs[a].multi_level and configs[a].adapt_space == "output"
    ]
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
        rows.append(
            {
                "study": spec.name,
                "arm": arm,
                "order": order,
                "role": arm_role(spec, arm),
                "multi_level": cfg.multi_level,
                "adapt_space": cfg.adapt_space,
                "use_target": cfg.use_target,
                "num_steps": cfg.num_steps,
                "searched": json.dumps(searched, sort_keys=True),
                "planned_search": spec.search.num_samples * spec.search.repeats,
                "planned_confirm": spec.confirm.top_k
                * len(spec.confirm.seeds)
                * spec.search.repeats,
            }
        )
    return rows


def comparison_rows(spec: StudySpec) -> list[dict[str, Any]]:
    return [
        {"study": spec.name, "order": order, "arm": a, "baseline": b}
        for order, (a, b) in enumerate(comparisons(spec))
    ]
