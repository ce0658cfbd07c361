"""A searched parameter's distribution, as the study spec and the ``arms`` table write it
(``{"log_uniform": [low, high]}``), turned into Optuna's: the one place that reads that form,
for the spec's validation and the report's parameter importances alike."""

from __future__ import annotations

from typing import Any


def optuna_distribution(dist: dict[str, list]) -> Any:
    """``{"uniform" | "log_uniform" | "int" | "categorical": values}`` -> an Optuna
    distribution (its constructor checks the bounds). Optuna loads on first use, so the
    report's command line answers ``--help`` without it."""
    import optuna

    ((kind, values),) = dist.items()
    if kind == "categorical":
        return optuna.distributions.CategoricalDistribution(values)
    low, high = values
    if kind == "int":
        return optuna.distributions.IntDistribution(low, high)
    return optuna.distributions.FloatDistribution(low, high, log=kind == "log_uniform")
