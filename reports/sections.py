"""The report's sections on the search (hyperparameters, their importance), GAN balance and cost,
each built from a ``Report``'s tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reports import figures
from reports.cost import compute_hours
from reports.gan import gan_outliers
from reports.importance import param_importances
from reports.text import esc

if TYPE_CHECKING:
    from reports.report import Report


def hyperparameters_section(report: Report) -> str:
    space = {
        name: dist for searched in report.searched.values() for name, dist in searched.items()
    }
    logs = {name for name, dist in space.items() if "log_uniform" in dist}
    numeric = [name for name, dist in space.items() if "categorical" not in dist]
    if not numeric:
        return "<p>No searched numeric hyperparameters.</p>"
    scored = report.trials[
        (report.trials["stage"] == "search") & report.trials["best_miou"].notna()
    ]
    parts = []
    for arm in report.arms:
        params = [name for name in numeric if name in report.searched.get(arm, {})]
        if params and (scored["arm"] == arm).any():
            parts.append(
                report.figure(figures.parallel_coordinates(report.trials, arm, params, logs))
            )
    lambdas = [n for n in numeric if n.startswith("lambda_")]
    drawn = [n for n in lambdas if n in scored and scored[n].notna().any()]
    if drawn:
        parts.append(report.figure(figures.sensitivity(report.trials, drawn, report.arms, logs)))
    elif lambdas:
        parts.append(
            "<p class='note'>Lambda sensitivity: no search trial has been evaluated yet.</p>"
        )
    return "".join(parts) or "<p>No search trial has been evaluated yet.</p>"


def importance_section(report: Report) -> str:
    values: dict[str, dict[str, float]] = {}
    notes = []
    for arm in report.arms:
        result = param_importances(report.trials, report.evals, arm, report.searched.get(arm, {}))
        if isinstance(result, str):
            notes.append(f"{esc(arm)}: {esc(result)}")
        else:
            values[arm], label = result
            notes.append(f"{esc(arm)}: importance for the {esc(label)}")
    out = report.figure(figures.importance(values)) if values else ""
    if notes:
        out += "<p class='note'>" + "<br>".join(notes) + "</p>"
    return out


def gan_section(report: Report) -> str:
    adversarial, flagged = gan_outliers(report.trials, report.evals)
    if not adversarial:
        return "<p>No adversarial trials.</p>"
    if not report.evals["trial_id"].isin(adversarial).any():
        return "<p>No adversarial trial has been evaluated yet.</p>"
    text = (
        "<p class='note'>Adversarial trials only (not the source-only or control arms, "
        "whose D trains unopposed). Flagged: vanilla-GAN trials whose main D loss left the "
        "0.2-0.5 band the authors describe (LS-GAN's scale differs and is not flagged).</p>"
    )
    listing = (
        "<ul>" + "".join(f"<li>{esc(f)}</li>" for f in flagged) + "</ul>"
        if flagged
        else "<p>None flagged.</p>"
    )
    return (
        report.figure(figures.gan_balance(report.evals, adversarial, report.arms)) + text + listing
    )


def cost_section(report: Report) -> str:
    spent, estimate = compute_hours(report.trials, report.arm_table)
    if not report.trials["compute_seconds"].notna().any():
        return "<p>No trial has reported its compute time yet.</p>"
    text = f"<p>Spent so far: {spent:.2f} compute hours (one device per trial)."
    if estimate is not None:
        text += (
            f" The whole study as planned: at most {estimate:.2f} hours (each arm's "
            "measured seconds per step times the steps its trials plan; an upper bound "
            "where ASHA stops trials early)."
        )
    return text + "</p>" + report.figure(figures.cost(report.trials, report.arms))
