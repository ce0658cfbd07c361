"""``--smoke``: any study spec at a tiny size, the whole pipeline, on the spec's own data roots.

What a user runs before booking a cluster: every arm's search (2 trials), the confirm stage
(the first 2 seeds), the tables and the report, with the small backbone, 64x128 images, 4
steps and 4 evaluation images, in a results folder of its own (``<name>-smoke``). What the
arms compare (levels, target use, lambdas, the search space) is kept; only sizes change. It
works on the raw YAML mapping, before ``--set`` (which may still adjust it) and before
``${VAR}`` expansion (so the init-weight variables a small backbone cannot use need not be set).
"""

from __future__ import annotations

import copy
from typing import Any

SUFFIX = "-smoke"
# The sizes a smoke run trains at; an arm's own value of one of these keys is dropped.
TRAIN: dict[str, Any] = {
    "backbone": "small",
    "ndf": 8,
    "input_size_source": "64x128",
    "input_size_target": "64x128",
    "batch_size": 1,
    "iter_size": 1,
    "num_steps": 4,
    "schedule_steps": 4,
    "eval_every": 2,
    "checkpoint_every": 2,
    "eval_limit": 4,
    "num_workers": 0,
    "init_weights": None,
    "init_discriminator_aux": None,
    "init_discriminator_main": None,
}
SEARCH_SAMPLES, CONFIRM_SEEDS = 2, 2


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def smoke_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """The raw spec made tiny (see the module docstring); the input is not changed."""
    out = copy.deepcopy(raw)
    out["name"] = f"{out.get('name', 'study')}{SUFFIX}"
    train = {k: v for k, v in _mapping(out.get("train")).items() if k not in TRAIN}
    out["train"] = {**train, **TRAIN}
    arms = _mapping(out.get("arms"))
    out["arms"] = {
        arm: {k: v for k, v in _mapping(values).items() if k not in TRAIN}
        for arm, values in arms.items()
    }
    search = _mapping(out.get("search"))
    space = {k: v for k, v in _mapping(search.get("space")).items() if k not in TRAIN}
    sampler = {**_mapping(search.get("sampler")), "n_startup_trials": 1}
    out["search"] = {**search, "num_samples": SEARCH_SAMPLES, "sampler": sampler, "space": space}
    scheduler = _mapping(out.get("scheduler"))
    if scheduler.get("kind", "asha") == "asha":
        scheduler["grace_period"] = TRAIN["eval_every"]
    out["scheduler"] = scheduler
    confirm = _mapping(out.get("confirm"))
    seeds = confirm.get("seeds", [0, 1, 2])
    top_k = confirm.get("top_k", 1)
    confirm["seeds"] = seeds[:CONFIRM_SEEDS] if isinstance(seeds, list) else seeds
    confirm["top_k"] = min(top_k, 1) if isinstance(top_k, int) else top_k
    out["confirm"] = confirm
    resources = _mapping(out.get("resources"))
    resources["cpus_per_trial"] = 1
    if resources.get("gpus_per_trial") not in (None, "auto", 0):
        resources["gpus_per_trial"] = "auto"
    out["resources"] = resources
    return out
