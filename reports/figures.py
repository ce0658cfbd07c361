"""Plotly figures of a study, each a pure function of the tables (pandas DataFrames)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reports.gan import HEALTHY_D_LOSS  # the band the authors describe (issue #69)

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def arm_colours(arms: list[str]) -> dict[str, str]:
    return {arm: PALETTE[i % len(PALETTE)] for i, arm in enumerate(arms)}


def _layout(fig: go.Figure, title: str, height: int = 420) -> go.Figure:
    fig.update_layout(
        title=title,
        height=height,
        template="plotly_white",
        margin={"l": 60, "r": 30, "t": 60, "b": 50},
    )
    return fig


def class_heatmaps(
    class_iou: pd.DataFrame, arms: list[str], classes: list[str], pairs: list[tuple[str, str]]
) -> go.Figure:
    """Mean IoU per arm x class, and per compared pair (a, b) the per-class IoU difference a - b
    paired by seed (the mean over the seeds both arms have), confirm stage, report split."""
    table = class_iou.groupby(["arm", "class"])["iou"].mean().unstack("class")
    table = table.reindex(index=[a for a in arms if a in table.index], columns=classes)
    by_seed = class_iou.groupby(["arm", "seed", "class"])["iou"].mean()
    deltas, labels = [], []
    for arm, base in pairs:
        a, b = by_seed.loc[arm].unstack("class"), by_seed.loc[base].unstack("class")
        shared = a.index.intersection(b.index)
        if len(shared):
            deltas.append((a.loc[shared] - b.loc[shared]).mean().reindex(classes).to_numpy())
            labels.append(f"{arm} \u2212 {base}")
    fig = make_subplots(
        rows=2 if deltas else 1,
        cols=1,
        vertical_spacing=0.18,
        row_heights=[len(table), max(len(deltas), 1)] if deltas else None,
        subplot_titles=["IoU per class", "IoU difference per class, paired by seed"][
            : 2 if deltas else 1
        ],
    )
    fig.add_trace(
        go.Heatmap(
            z=table.values,
            x=classes,
            y=list(table.index),
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            colorbar={"y": 0.78 if deltas else 0.5, "len": 0.4},
            hovertemplate="%{y} / %{x}: %{z:.3f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    if deltas:
        values = np.array(deltas, dtype=float)
        bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
        bound = bound if math.isfinite(bound) and bound > 0 else 1.0
        fig.add_trace(
            go.Heatmap(
                z=values,
                x=classes,
                y=labels,
                zmid=0,
                zmin=-bound,
                zmax=bound,
                colorscale="RdBu",
                colorbar={"y": 0.22, "len": 0.4},
                hovertemplate="%{y} / %{x}: %{z:+.3f}<extra></extra>",
            ),
            row=2,
            col=1,
        )
    height = 260 + 28 * (len(table) + len(deltas))
    return _layout(
        fig, "Per-class IoU (confirm stage, report split, best-on-select model)", height=height
    )


def learning_curves(evals: pd.DataFrame, trials: pd.DataFrame, arms: list[str]) -> go.Figure:
    """Select-split mIoU against step, one line per trial; an x where ASHA stopped a trial."""
    colours = arm_colours(arms)
    fig = go.Figure()
    stopped = set(trials.loc[trials["status"] == "early_stopped", "trial_id"])
    select = evals[(evals["split"] == "select") & evals["miou"].notna()]
    shown: set[str] = set()
    for (arm, stage, trial_id), rows in select.groupby(["arm", "stage", "trial_id"], sort=True):
        rows = rows.sort_values("step")
        fig.add_trace(
            go.Scatter(
                x=rows["step"],
                y=rows["miou"],
                mode="lines+markers",
                name=arm,
                legendgroup=arm,
                showlegend=arm not in shown,
                line={"color": colours.get(arm), "dash": "dot" if stage == "search" else "solid"},
                marker={"size": 4},
                hovertemplate=f"{arm} {stage} {trial_id}<br>step %{{x}}: %{{y:.3f}}<extra></extra>",  # noqa: E501
            )
        )
        shown.add(arm)
        if trial_id in stopped:
            last = rows.iloc[-1]
            fig.add_trace(
                go.Scatter(
                    x=[last["step"]],
                    y=[last["miou"]],
                    mode="markers",
                    marker={"symbol": "x", "size": 10, "color": colours.get(arm)},
                    legendgroup=arm,
                    showlegend=False,
                    hovertemplate=f"stopped by ASHA: {trial_id}<extra></extra>",
                )
            )
    fig.update_xaxes(title="training step")
    fig.update_yaxes(title="mIoU (select split)")
    return _layout(fig, "Learning curves (dotted: search, solid: confirm; x: stopped by ASHA)")


def parallel_coordinates(
    trials: pd.DataFrame, arm: str, params: list[str], logs: set[str]
) -> go.Figure:
    rows = trials[(trials["arm"] == arm) & (trials["stage"] == "search")]
    dimensions = []
    for name in params:
        values = pd.to_numeric(rows[name], errors="coerce")
        if name in logs:
            values = np.log10(values)
        dimensions.append({"label": f"log10 {name}" if name in logs else name, "values": values})
    dimensions.append({"label": "best mIoU", "values": rows["best_miou"]})
    fig = go.Figure(
        go.Parcoords(
            line={"color": rows["best_miou"], "colorscale": "Viridis", "showscale": True},
            dimensions=dimensions,
        )
    )
    _layout(fig, f"Hyperparameters against best select mIoU: {arm} (search stage)", 400)
    fig.update_layout(margin={"t": 110})
    return fig


def sensitivity(
    trials: pd.DataFrame, params: list[str], arms: list[str], logs: set[str]
) -> go.Figure:
    """Each lambda against best select mIoU, a point per search trial, coloured by arm."""
    colours = arm_colours(arms)
    fig = make_subplots(rows=1, cols=len(params), subplot_titles=params, shared_yaxes=True)
    search = trials[trials["stage"] == "search"]
    for col, name in enumerate(params, start=1):
        for arm in arms:
            rows = search[(search["arm"] == arm) & search[name].notna()]
            if rows.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=rows[name],
                    y=rows["best_miou"],
                    mode="markers",
                    name=arm,
                    legendgroup=arm,
                    showlegend=col == 1,
                    marker={"color": colours[arm], "size": 9},
                    hovertext=rows["trial_id"],
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(type="log" if name in logs else "linear", title=name, row=1, col=col)
    fig.update_yaxes(title="best mIoU (select)", row=1, col=1)
    return _layout(fig, "Lambda sensitivity (search stage)", 380)


def importance(importances: dict[str, dict[str, float]]) -> go.Figure:
    arms = list(importances)
    fig = make_subplots(rows=1, cols=max(len(arms), 1), subplot_titles=arms or ["no data"])
    for col, arm in enumerate(arms, start=1):
        values = importances[arm]
        fig.add_trace(
            go.Bar(
                x=list(values.values()),
                y=list(values),
                orientation="h",
                showlegend=False,
                marker={"color": "#1f77b4"},
            ),
            row=1,
            col=col,
        )
    return _layout(fig, "Parameter importance (PED-ANOVA over completed search trials)", 340)


def gan_balance(evals: pd.DataFrame, trial_ids: list[str], arms: list[str]) -> go.Figure:
    """D loss and adversarial loss per level against step, the healthy D band shaded."""
    colours = arm_colours(arms)
    rows = evals[evals["trial_id"].isin(trial_ids) & (evals["split"] == "select")]
    fig = make_subplots(
        rows=2,
        cols=2,
        shared_xaxes=True,
        subplot_titles=["loss_d_main", "loss_d_aux", "loss_adv_trg_main", "loss_adv_trg_aux"],
    )
    shown: set[str] = set()
    for (arm, trial_id), trial in rows.groupby(["arm", "trial_id"], sort=True):
        trial = trial.sort_values("step")
        for index, key in enumerate(
            ("loss_d_main", "loss_d_aux", "loss_adv_trg_main", "loss_adv_trg_aux")
        ):
            if trial[key].notna().any():
                fig.add_trace(
                    go.Scatter(
                        x=trial["step"],
                        y=trial[key],
                        mode="lines",
                        name=arm,
                        legendgroup=arm,
                        showlegend=arm not in shown,
                        line={"color": colours.get(arm), "width": 1},
                        hovertext=trial_id,
                    ),
                    row=index // 2 + 1,
                    col=index % 2 + 1,
                )
                shown.add(arm)
    for col in (1, 2):
        fig.add_hrect(
            y0=HEALTHY_D_LOSS[0],
            y1=HEALTHY_D_LOSS[1],
            row=1,
            col=col,
            fillcolor="green",
            opacity=0.12,
            line_width=0,
        )
    fig.update_xaxes(title="training step", row=2)
    return _layout(
        fig, "GAN balance (each point: mean since the previous report; green: healthy D loss)", 560
    )


def cost(trials: pd.DataFrame, arms: list[str]) -> go.Figure:
    """Cumulative compute hours against the best select mIoU found so far, per arm."""
    colours = arm_colours(arms)
    fig = go.Figure()
    for arm in arms:
        rows = trials[(trials["arm"] == arm)].sort_values(
            ["stage", "trial_id"], ascending=[False, True]
        )
        if rows.empty:
            continue
        hours = rows["compute_seconds"].fillna(0).cumsum() / 3600
        best = rows["best_miou"].cummax()
        fig.add_trace(
            go.Scatter(
                x=hours,
                y=best,
                mode="lines+markers",
                name=arm,
                line={"shape": "hv", "color": colours[arm]},
            )
        )
    fig.update_xaxes(title="cumulative compute hours (search, then confirm)")
    fig.update_yaxes(title="best select mIoU so far")
    return _layout(fig, "Cost")
