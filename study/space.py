"""The YAML search space as Optuna define-by-run functions, one per arm."""

from __future__ import annotations

from typing import Any

from study.spec import Distribution, StudySpec


class ArmSpace:
    """Suggests exactly the parameters the YAML gives to one arm.

    A module-level class, not a closure: OptunaSearch pickles its space with the searcher state,
    and a lambda or a local function cannot be pickled (ray-tune-notes.md section 4).
    """

    def __init__(
        self, space: dict[str, Distribution], arm: str, arms: list[str], constants: dict[str, Any]
    ) -> None:
        self.arm = arm
        self.params = {
            name: (dist.kind, list(dist.bounds))
            for name, dist in space.items()
            if arm in (dist.arms or arms)
        }
        self.constants = dict(constants)

    def __call__(self, trial: Any) -> dict[str, Any]:
        for name, (kind, bounds) in self.params.items():
            if kind == "uniform":
                trial.suggest_float(name, bounds[0], bounds[1])
            elif kind == "log_uniform":
                trial.suggest_float(name, bounds[0], bounds[1], log=True)
            elif kind == "int":
                trial.suggest_int(name, bounds[0], bounds[1])
            else:
                trial.suggest_categorical(name, bounds)
        return dict(self.constants)


def arm_space(spec: StudySpec, arm: str) -> ArmSpace:
    return ArmSpace(spec.search.space, arm, list(spec.arms), {"arm": arm, "stage": "search"})
