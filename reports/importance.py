"""Optuna's parameter importances (PED-ANOVA) of an arm's search, rebuilt from the tables."""

from __future__ import annotations

import pandas as pd

from reports.distributions import optuna_distribution


def importance_scores(
    trials: pd.DataFrame, evals: pd.DataFrame, arm: str
) -> tuple[pd.DataFrame, str]:
    """The search trials and the score to explain: the final select mIoU of the trials that
    trained to the end when at least 3 did; else, under ASHA, every trial's select mIoU at the
    last step all of them reached (so early-stopped trials count, at an equal budget)."""
    search = trials[(trials["arm"] == arm) & (trials["stage"] == "search")]
    completed = search[search["status"] == "completed"]
    if len(completed) >= 3:
        return completed.assign(score=completed["final_miou"]), "final select mIoU"
    ok = search[search["status"].isin(["completed", "early_stopped"])]
    rows = evals[
        evals["trial_id"].isin(ok["trial_id"])
        & (evals["split"] == "select")
        & (evals["model"] == "current")
        & evals["miou"].notna()
    ]
    if rows.empty:
        return ok.iloc[0:0].assign(score=[]), "select mIoU"
    common = int(rows.groupby("trial_id")["step"].max().min())
    at = rows[rows["step"] == common].set_index("trial_id")["miou"]
    scored = ok[ok["trial_id"].isin(at.index)]
    label = f"select mIoU at step {common}, which every search trial reached"
    return scored.assign(score=scored["trial_id"].map(at).to_numpy()), label


def param_importances(
    trials: pd.DataFrame, evals: pd.DataFrame, arm: str, searched: dict[str, dict]
) -> tuple[dict[str, float], str] | str:
    """optuna.importance (PED-ANOVA) over the arm's search trials, rebuilt from the tables;
    returns the importances and what they explain, or why there are none."""
    import optuna

    if len(searched) < 2:
        return "fewer than two searched parameters"
    rows, label = importance_scores(trials, evals, arm)
    if len(rows) < 3:
        return f"{len(rows)} scored search trials; importance needs at least 3"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {name: optuna_distribution(dist) for name, dist in searched.items()}
    study = optuna.create_study(direction="maximize")
    for row in rows.itertuples():
        params = {name: getattr(row, name) for name in searched}
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=distributions, value=float(row.score)
            )
        )
    try:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        return optuna.importance.get_param_importances(study, evaluator=evaluator), label
    except (RuntimeError, ValueError) as exc:
        return f"importance failed: {exc}"
