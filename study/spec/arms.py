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
    levels = ("main", "aux") if cfg.multi_level else ("main",)
    keys = [f"lambda_{kind}_{level}" for kind in ("adv", "ent") for level in levels]
    silent = all(getattr(cfg, key) == 0 and key not in spec.searched(arm) for key in keys)
    return "bn_control" if silent else "adapted"


def uses_entropy(spec: StudySpec, arm: str) -> bool:
    """An ADVENT arm: D on the entropy map (AdvEnt), or an entropy loss (MinEnt)."""
    cfg = arm_config(spec, arm)
    searched = spec.searched(arm)
    weighted = any(
        getattr(cfg, key) > 0 or key in searched for key in ("lambda_ent_main", "lambda_ent_aux")
    )
    return cfg.use_target and (cfg.adapt_space == "entropy" or weighted)


def method(spec: StudySpec, arm: str) -> str:
    """What the arm trains with, in words (the report's arms table)."""
    cfg, role = arm_config(spec, arm), arm_role(spec, arm)
    if role == "source_only":
        return "source only"
    if role == "bn_control":
        return "BatchNorm control (target through G, no target loss)"
    levels = "multi-level" if cfg.multi_level else "single-level"
    searched = spec.searched(arm)
    adversarial = any(
        getattr(cfg, key) > 0 or key in searched for key in ("lambda_adv_main", "lambda_adv_aux")
    )
    entropy = any(
        getattr(cfg, key) > 0 or key in searched for key in ("lambda_ent_main", "lambda_ent_aux")
    )
    parts = []
    if adversarial:
        spaces = {
            "output": "output-space adversarial (AdaptSegNet)",
            "feature": "feature-space adversarial",
            "entropy": "entropy-map adversarial (ADVENT's AdvEnt)",
        }
        parts.append(spaces[cfg.adapt_space])
    if entropy:
        parts.append("entropy minimisation (ADVENT's MinEnt)")
    return f"{' + '.join(parts)}, {levels}"


def model_name(cfg: TrainConfig) -> str:
    """G as built: DeepLab-v2 on its backbone, with how many ASPP branches it sums (AdaptSegNet's
    official code two, ADVENT's four: a method comparison must show which ran)."""
    return f"DeepLab-v2 {cfg.backbone}, {cfg.aspp_branches} ASPP branches"


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
    (output-space) one, each ADVENT arm (AdvEnt, MinEnt) against each output-space adversarial
    one, every adapted arm against the BatchNorm control, and every arm against the source-only
    arm, in that order and the spec's arm order within each."""
    if spec.compare is not None:
        return [(a, b) for a, b in spec.compare]
    roles = {arm: arm_role(spec, arm) for arm in spec.arms}
    configs = {arm: arm_config(spec, arm) for arm in spec.arms}
    baselines = baseline_arms(spec)
    source_only, control = baselines.get("source_only"), baselines.get("bn_control")
    adapted = [arm for arm, role in roles.items() if role == "adapted"]
    entropy = {arm for arm in adapted if uses_entropy(spec, arm)}
    single = [
        a
        for a in adapted
        if not configs[a].multi_level and configs[a].adapt_space == "output" and a not in entropy
    ]
    output = [a for a in adapted if configs[a].adapt_space == "output" and a not in entropy]
    pairs: list[tuple[str, str]] = []
    for arm in adapted:  # the levels question first: the study exists for it
        cfg = configs[arm]
        if arm not in entropy and (cfg.multi_level or cfg.adapt_space == "feature"):
            pairs += [(arm, other) for other in single]
    for arm in adapted:  # then the methods: ADVENT against AdaptSegNet
        if arm in entropy:
            pairs += [(arm, other) for other in output]
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
                "method": method(spec, arm),
                "model": model_name(cfg),
                "source": cfg.source,
                "eval_classes": cfg.evaluation_classes,
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
