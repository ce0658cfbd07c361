"""The YAML search space as Optuna define-by-run functions, one per arm."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution

from study.spec.schema import Distribution, StudySpec


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    """Ask ``trial`` for ``name`` from an Optuna distribution (the define-by-run calls)."""
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, log=distribution.log)
    return trial.suggest_categorical(name, distribution.choices)


class ArmSpace:
    """Suggests exactly the parameters the YAML gives to one arm.

    A module-level class, not a closure: OptunaSearch pickles its space with the searcher state,
    and a lambda or a local function cannot be pickled.
    """

    def __init__(self, searched: dict[str, Distribution], arm: str, constants: dict[str, Any]):
        self.arm = arm
        self.distributions = {name: dist.to_optuna() for name, dist in searched.items()}
        self.constants = dict(constants)

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        for name, distribution in self.distributions.items():
            suggest(trial, name, distribution)
        return dict(self.constants)


def arm_space(spec: StudySpec, arm: str, repeat: int = 1) -> ArmSpace:
    """The space of one repeat of an arm's search (its trials' configs name the repeat from the
    second on)."""
    constants: dict[str, Any] = {"arm": arm, "stage": "search"}
    if repeat > 1:
        constants["repeat"] = repeat
    return ArmSpace(spec.searched(arm), arm, constants)
