"""The offline HTML ablation report of a study, from its tables alone: what ``python -m
reports.build`` writes (the command line is in ``reports/build.py``)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.offline

from adaptseg.fileio import atomic_write_text
from reports import figures
from reports.stats import Interval, miou_interval, paired_difference

BASELINE_ORDER = ("source_only", "bn_control")  # roles, bottom first (the arms table's `role`)
CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#222}
h1{margin-bottom:.2rem} h2{margin-top:2.2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8rem 0} td,th{border:1px solid #ccc;padding:.3rem .6rem}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#555;font-size:.92rem} .verdict{background:#f6f9ff;border-left:4px solid #1f77b4;
padding:.5rem 1rem} pre{background:#f7f7f7;padding:.8rem;overflow:auto;font-size:.85rem}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


class Report:
    """The sections of one report, assembled from the tables."""

    def __init__(self, study_dir: Path) -> None:
        tables = study_dir / "tables"
        self.trials = pd.read_parquet(tables / "trials.parquet")
        self.evals = pd.read_parquet(tables / "evals.parquet")
        self.class_iou = pd.read_parquet(tables / "class_iou.parquet")
        spec_file = study_dir / "study.yaml"
        self.spec_text = spec_file.read_text() if spec_file.exists() else ""
        provenance = study_dir / "provenance.json"
        self.provenance = json.loads(provenance.read_text()) if provenance.exists() else {}
        self.arm_table = _read_optional(tables / "arms.parquet")
        pairs = _read_optional(tables / "comparisons.parquet")
        if self.arm_table is not None and len(self.arm_table):
            self.arm_table = self.arm_table.sort_values("order")
            self.arms = list(self.arm_table["arm"])
            self.name = str(self.arm_table["study"].iloc[0])
        else:  # tables exported by an older version: the arms the trials name
            self.arms = list(dict.fromkeys(self.trials["arm"]))
            self.name = str(self.trials["study"].iloc[0]) if len(self.trials) else study_dir.name
        roles = self._column("role")
        self.baselines = [
            next(a for a in self.arms if roles.get(a) == role)
            for role in BASELINE_ORDER
            if role in roles.values()
        ]
        self.pairs = (
            [(r.arm, r.baseline) for r in pairs.sort_values("order").itertuples()]
            if pairs is not None
            else [(a, b) for b in self.baselines for a in self.arms if a != b]
        )
        self.searched = {
            arm: json.loads(text) for arm, text in self._column("searched").items() if text
        }
        self.study_dir = study_dir
        self.figure_count = 0

    def _column(self, name: str) -> dict[str, Any]:
        """arm -> the arms table's ``name`` (empty without the table or the column)."""
        if self.arm_table is None or name not in self.arm_table:
            return {}
        values = self.arm_table.set_index("arm")[name]
        return {arm: None if pd.isna(value) else value for arm, value in values.items()}

    # --- helpers ---------------------------------------------------------------------------
    def figure(self, fig: go.Figure) -> str:
        self.figure_count += 1
        return fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"figure-{self.figure_count}",
            config={"displaylogo": False},
        )

    def headline_trials(self) -> pd.DataFrame:
        """The confirm trials the headline numbers come from: rank 0 of the current plan."""
        confirm = self.trials[(self.trials["stage"] == "confirm") & (self.trials["rank"] == 0)]
        if "current" in confirm:
            confirm = confirm[confirm["current"].fillna(True).astype(bool)]
        return confirm

    def confirm_scores(self, model: str) -> dict[str, dict[int, float]]:
        """Per arm, seed -> report-split mIoU of the rank-0 config (``model``: final or
        best_on_select)."""
        column = f"report_miou_{model}"
        out: dict[str, dict[int, float]] = {}
        for row in self.headline_trials().itertuples():
            value = getattr(row, column)
            if value is not None and not pd.isna(value):
                out.setdefault(row.arm, {})[int(row.seed)] = float(value)
        return out

    # --- sections --------------------------------------------------------------------------
    def status_rows(self) -> list[dict[str, Any]]:
        """Per arm and stage: trials planned, done, running, errored and not started, and the
        best select mIoU so far."""
        planned = {"search": self._column("planned_search"),
                   "confirm": self._column("planned_confirm")}  # fmt: skip
        rows = []
        for arm in self.arms:
            for stage in ("search", "confirm"):
                trials = self.trials[(self.trials["arm"] == arm) & (self.trials["stage"] == stage)]
                if "current" in trials:
                    trials = trials[trials["current"].fillna(True).astype(bool)]
                counts = trials["status"].value_counts()
                running, errored = int(counts.get("running", 0)), int(counts.get("errored", 0))
                done = len(trials) - running - errored
                want = planned[stage].get(arm)
                best = trials["best_miou"].max() if len(trials) else math.nan
                rows.append({
                    "arm": arm, "stage": stage, "done": done, "running": running,
                    "errored": errored,
                    "pending": max(int(want) - len(trials), 0) if want is not None else None,
                    "best": None if pd.isna(best) else float(best),
                })  # fmt: skip
        return rows

    def status(self) -> str:
        state = _read_optional(self.study_dir / "tables" / "status.parquet")
        if state is None or state.empty:
            line = "No status recorded (tables exported by hand)."
        else:
            row = state.iloc[0]
            if row["state"] == "complete":
                line = "<b>Complete.</b>"
            elif row["state"] == "running":
                left = row["seconds_left"]
                when = f"; {_duration(left)} left in this stage" if pd.notna(left) else ""
                line = f"<b>Running</b>: {esc(row['stage'])}{when}."
            else:
                line = f"<b>{esc(str(row['state']).capitalize())}</b> during {esc(row['stage'])}."
            line += f" <span class='note'>Updated {esc(row['updated'])}.</span>"
        body = "".join(
            f"<tr><td>{esc(r['arm'])}</td><td>{r['stage']}</td><td class='num'>{r['done']}</td>"
            f"<td class='num'>{r['running']}</td><td class='num'>"
            f"{'' if r['pending'] is None else r['pending']}</td><td class='num'>{r['errored']}"
            f"</td><td class='num'>{_optional(r['best'])}</td></tr>"
            for r in self.status_rows()
        )
        return (
            f"<p>{line}</p><table><tr><th>arm</th><th>stage</th><th>done</th><th>running</th>"
            "<th>not started</th><th>errored</th><th>best select mIoU</th></tr>"
            f"{body}</table>"
        )

    def arm_rows(self) -> list[dict[str, Any]]:
        """Per arm with confirm results: its role, seeds, and the best-on-select and
        final-model mIoU intervals (report split)."""
        scores = self.confirm_scores("best_on_select")
        finals = self.confirm_scores("final")
        roles = self._column("role")
        return [
            {"arm": arm, "role": roles.get(arm) or "", "seeds": len(scores[arm]),
             "best": miou_interval(list(scores[arm].values())),
             "final": miou_interval(list(finals.get(arm, {}).values()))}
            for arm in self.arms if arm in scores
        ]  # fmt: skip

    def comparison_rows(self) -> list[dict[str, Any]]:
        """Per compared pair with confirm results on both sides: the paired difference a - b
        over their shared seeds (best-on-select, report split) and its verdict."""
        scores = self.confirm_scores("best_on_select")
        rows = []
        for arm, base in self.pairs:
            if arm in scores and base in scores:
                diff = paired_difference(scores[arm], scores[base])
                rows.append({"arm": arm, "baseline": base, "diff": diff,
                             "verdict": _verdict(arm, base, diff)})  # fmt: skip
        return rows

    def ablation(self) -> str:
        arms = self.arm_rows()
        if not arms:
            return "<p>No confirm-stage results yet (this table needs the confirm stage).</p>"
        head = (
            "<tr><th>arm</th><th>role</th><th>seeds</th><th>mIoU, best-on-select (report)</th>"
            "<th>mIoU, final model (report)</th></tr>"
        )
        body = "".join(
            f"<tr><td>{esc(r['arm'])}</td><td>{esc(r['role'])}</td><td class='num'>"
            f"{r['seeds']}</td><td class='num'>{_interval(r['best'])}</td>"
            f"<td class='num'>{_interval(r['final'])}</td></tr>"
            for r in arms
        )
        pairs = self.comparison_rows()
        compared = "".join(
            f"<tr><td>{esc(r['arm'])} &minus; {esc(r['baseline'])}</td><td class='num'>"
            f"{r['diff'].n}</td><td class='num'>{_interval(r['diff'], signed=True)}</td>"
            f"<td>{_short_verdict(r['diff'])}</td></tr>"
            for r in pairs
        )
        comparisons = (
            "<h3>Comparisons (paired by seed)</h3><table><tr><th>comparison</th>"
            "<th>paired seeds</th><th>difference [95% interval]</th><th>verdict</th></tr>"
            f"{compared}</table>"
            if pairs
            else "<p>No comparison has confirm results on both sides yet.</p>"
        )
        verdicts = [r["verdict"] for r in pairs if r["diff"].excludes_zero]
        few = [r for r in pairs if r["diff"].n < 2]
        if few:
            verdicts.append(
                f"{len(few)} comparison{'s' if len(few) > 1 else ''} with fewer than two paired "
                "seeds: no interval can be drawn (add seeds to confirm.seeds)."
            )
        if pairs and not verdicts:
            verdicts.append("No comparison's interval excludes 0: the study cannot tell these "
                            "arms apart at this number of seeds.")  # fmt: skip
        seeds = max(r["seeds"] for r in arms)
        clipped = any(r["best"].clipped or r["final"].clipped for r in arms) or any(
            r["diff"].clipped for r in pairs
        )
        note = (
            f"<p class='note'>Intervals are 95% Student-t intervals over "
            f"{_count(seeds, 'seed')}, cut to the range the quantity can take ([0, 1] for an "
            "mIoU, [-1, 1] for a difference)"
            + ("; &dagger; marks an interval that reached past it and was cut" if clipped else "")
            + ". With so few seeds they are wide; an interval that includes 0 means the study "
            "cannot tell the arms apart, not that they are equal. A verdict is given only "
            "where the interval excludes 0.</p>"
        )
        return (
            f"<table>{head}{body}</table>{comparisons}{note}"
            f"<div class='verdict'>{'<br>'.join(verdicts)}</div>"
        )

    def ablation_text(self) -> str:
        """The ablation for the terminal at the end of a study: the arms, then the pairs."""
        arms = self.arm_rows()
        if not arms:
            return "no confirm-stage results"
        lines = [["arm", "seeds", "mIoU (report, best-on-select)"]]
        lines += [[r["arm"], str(r["seeds"]), _interval(r["best"])] for r in arms]
        pairs = self.comparison_rows()
        compared = [["comparison", "seeds", "difference (paired)", "verdict"]]
        compared += [
            [f"{r['arm']} - {r['baseline']}", str(r["diff"].n),
             _interval(r["diff"], signed=True), _short_verdict(r["diff"], html_text=False)]
            for r in pairs
        ]  # fmt: skip
        return _columns(lines) + ("\n\n" + _columns(compared) if pairs else "")

    def summary_pairs(self) -> list[dict[str, Any]]:
        """The comparisons for ``summary.json``."""
        return [
            {"arm": r["arm"], "baseline": r["baseline"], "difference": _number(r["diff"].mean),
             "low": _number(r["diff"].low), "high": _number(r["diff"].high),
             "paired_seeds": r["diff"].n, "clipped": r["diff"].clipped,
             "verdict": _short_verdict(r["diff"], html_text=False)}
            for r in self.comparison_rows()
        ]  # fmt: skip

    def per_class_rows(self) -> pd.DataFrame:
        """Per-class IoU of the headline: rank-0 confirm trials, best-on-select, report split."""
        best = self.headline_trials()
        return self.class_iou[
            self.class_iou["trial_id"].isin(best["trial_id"])
            & (self.class_iou["split"] == "report")
            & (self.class_iou["model"] == "best_on_select")
        ]

    def per_class(self) -> str:
        rows = self.per_class_rows()
        if rows.empty:
            return "<p>No confirm-stage per-class results yet.</p>"
        classes = list(dict.fromkeys(self.class_iou["class"]))
        pairs = [(a, b) for a, b in self.pairs if {a, b} <= set(rows["arm"])]
        return self.figure(figures.class_heatmaps(rows, self.arms, classes, pairs))

    def curves(self) -> str:
        if self.evals.empty:
            return "<p>No evaluations yet.</p>"
        return self.figure(figures.learning_curves(self.evals, self.trials, self.arms))

    def hyperparameters(self) -> str:
        space = {
            name: dist for searched in self.searched.values() for name, dist in searched.items()
        }
        logs = {name for name, dist in space.items() if "log_uniform" in dist}
        numeric = [name for name, dist in space.items() if "categorical" not in dist]
        if not numeric:
            return "<p>No searched numeric hyperparameters.</p>"
        scored = self.trials[(self.trials["stage"] == "search") & self.trials["best_miou"].notna()]
        parts = []
        for arm in self.arms:
            params = [name for name in numeric if name in self.searched.get(arm, {})]
            if params and (scored["arm"] == arm).any():
                parts.append(
                    self.figure(figures.parallel_coordinates(self.trials, arm, params, logs))
                )
        lambdas = [n for n in numeric if n.startswith("lambda_")]
        drawn = [n for n in lambdas if n in scored and scored[n].notna().any()]
        if drawn:
            parts.append(self.figure(figures.sensitivity(self.trials, drawn, self.arms, logs)))
        elif lambdas:
            parts.append("<p class='note'>Lambda sensitivity: no search trial has been "
                         "evaluated yet.</p>")  # fmt: skip
        return "".join(parts) or "<p>No search trial has been evaluated yet.</p>"

    def importance(self) -> str:
        values: dict[str, dict[str, float]] = {}
        notes = []
        for arm in self.arms:
            result = _importance(self.trials, self.evals, arm, self.searched.get(arm, {}))
            if isinstance(result, str):
                notes.append(f"{esc(arm)}: {esc(result)}")
            else:
                values[arm], label = result
                notes.append(f"{esc(arm)}: importance for the {esc(label)}")
        out = self.figure(figures.importance(values)) if values else ""
        if notes:
            out += "<p class='note'>" + "<br>".join(notes) + "</p>"
        return out

    def gan(self) -> str:
        adversarial, flagged = [], []
        for row in self.trials.itertuples():
            config = json.loads(row.config or "{}")
            weights = [config.get("lambda_adv_main", 0) or 0, config.get("lambda_adv_aux", 0) or 0]
            if not config.get("use_target", True) or max(weights) <= 0:
                continue
            adversarial.append(row.trial_id)
            if config.get("gan", "vanilla") != "vanilla":
                continue
            d_loss = self.evals[
                (self.evals["trial_id"] == row.trial_id) & (self.evals["split"] == "select")
            ]
            d_loss = d_loss.sort_values("step")["loss_d_main"].dropna()
            tail = d_loss.iloc[len(d_loss) // 2 :]
            if len(tail) and not (
                figures.HEALTHY_D_LOSS[0] <= tail.mean() <= figures.HEALTHY_D_LOSS[1]
            ):
                flagged.append(
                    f"{esc(row.arm)} {esc(row.stage)} {esc(row.trial_id)}: mean D loss "
                    f"{tail.mean():.3f} over the second half of training"
                )
        if not adversarial:
            return "<p>No adversarial trials.</p>"
        if not self.evals["trial_id"].isin(adversarial).any():
            return "<p>No adversarial trial has been evaluated yet.</p>"
        text = (
            "<p class='note'>Adversarial trials only (not the source-only or control arms, "
            "whose D trains unopposed). Flagged: vanilla-GAN trials whose main D loss left the "
            "0.2-0.5 band the authors describe (LS-GAN's scale differs and is not flagged).</p>"
        )
        listing = (
            "<ul>" + "".join(f"<li>{f}</li>" for f in flagged) + "</ul>"
            if flagged
            else "<p>None flagged.</p>"
        )
        return (
            self.figure(figures.gan_balance(self.evals, adversarial, self.arms)) + text + listing
        )

    def cost(self) -> str:
        spent, estimate = compute_hours(self.trials, self.arm_table)
        if not self.trials["compute_seconds"].notna().any():
            return "<p>No trial has reported its compute time yet.</p>"
        text = f"<p>Spent so far: {spent:.2f} compute hours (one device per trial)."
        if estimate is not None:
            text += (
                f" The whole study as planned: at most {estimate:.2f} hours (each arm's "
                "measured seconds per step times the steps its trials plan; an upper bound "
                "where ASHA stops trials early)."
            )
        return text + "</p>" + self.figure(figures.cost(self.trials, self.arms))

    def provenance_section(self) -> str:
        counts = self.trials.groupby(["stage", "status"]).size()
        status = "".join(
            f"<tr><td>{esc(s)}</td><td>{esc(t)}</td><td class='num'>{n}</td></tr>"
            for (s, t), n in counts.items()
        )
        errors = self.trials[self.trials["error"].notna()]
        error_list = "".join(
            f"<li>{esc(r.arm)} {esc(r.stage)} {esc(r.trial_id)} ({esc(r.status)}): "
            f"{esc(r.error)}</li>"
            for r in errors.itertuples()
        )
        packages = self.provenance.get("packages", {})
        versions = ", ".join(f"{esc(k)} {esc(v)}" for k, v in sorted(packages.items()))
        return (
            f"<p>Code version: <code>{esc(self.provenance.get('code_version', '?'))}</code>; "
            f"Python {esc(self.provenance.get('python', '?'))}; {versions}</p>"
            f"<table><tr><th>stage</th><th>status</th><th>trials</th></tr>{status}</table>"
            f"{'<ul>' + error_list + '</ul>' if error_list else '<p>No errors.</p>'}"
            f"<details><summary>study YAML</summary><pre>{esc(self.spec_text)}</pre></details>"
        )

    def render(self) -> str:
        sections = [
            ("Status", self.status()),
            ("Does adaptation help? (confirm stage, report split)", self.ablation()),
            ("Per class", self.per_class()),
            ("Learning curves (select split)", self.curves()),
            ("Hyperparameters (search stage, select split)", self.hyperparameters()),
            ("Parameter importance (search stage)", self.importance()),
            ("GAN balance", self.gan()),
            ("Cost", self.cost()),
            ("Provenance", self.provenance_section()),
        ]
        body = "".join(f"<h2>{esc(title)}</h2>{content}" for title, content in sections)
        name = esc(self.name)
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{name}: AdaptSegNet ablation report</title><style>{CSS}</style>"
            f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>"
            f"<h1>{name}</h1><p class='note'>AdaptSegNet ablation study report. Arm-level "
            "numbers say which split they were measured on: <b>select</b> (what the search "
            "optimised and ASHA saw) or <b>report</b> (held out for this report).</p>"
            f"{body}</body></html>\n"
        )


def compute_hours(trials: pd.DataFrame, arms: pd.DataFrame | None) -> tuple[float, float | None]:
    """(compute hours spent, the planned study's hours at the measured seconds per step of
    each arm: None until every arm has trained a step, or without the arms table)."""
    spent = float(trials["compute_seconds"].fillna(0).sum()) / 3600
    if arms is None or "planned_search" not in arms or trials.empty:
        return spent, None
    total = 0.0
    for arm in arms.itertuples():
        rows = trials[(trials["arm"] == arm.arm) & trials["compute_seconds"].notna()]
        steps = rows["step_reached"].sum()
        if not steps:
            return spent, None
        per_step = rows["compute_seconds"].sum() / steps
        total += per_step * arm.num_steps * (arm.planned_search + arm.planned_confirm)
    return spent, total / 3600


def _read_optional(path: Path) -> pd.DataFrame | None:
    return pd.read_parquet(path) if path.exists() else None


def _optional(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    if minutes < 1:
        return "under a minute"
    return f"about {minutes:.0f} min" if minutes < 90 else f"about {minutes / 60:.1f} h"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def _columns(lines: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _interval(interval: Interval, signed: bool = False) -> str:
    if interval.n == 0:
        return "-"
    sign = "+" if signed else ""
    if interval.n < 2 or math.isnan(interval.low):
        return f"{interval.mean:{sign}.4f} (1 seed: no interval)"
    mark = "\u2020" if interval.clipped else ""
    return f"{interval.mean:{sign}.4f} [{interval.low:{sign}.4f}, {interval.high:{sign}.4f}]{mark}"


def _short_verdict(diff: Interval, html_text: bool = True) -> str:
    """The table's verdict cell: words only where the interval excludes 0."""
    if diff.n < 2:
        return "no interval (1 seed)"
    if not diff.excludes_zero:
        return "cannot tell apart"
    word = "better" if diff.mean > 0 else "worse"
    return f"<b>{word}</b>" if html_text else word


def _verdict(arm: str, base: str, diff: Interval) -> str:
    """One sentence for a comparison whose interval excludes 0."""
    word = "beats" if diff.mean > 0 else "is worse than"
    return (
        f"<b>{esc(arm)} {word} {esc(base)}</b> by {abs(diff.mean):.4f} mIoU "
        f"(95% interval [{diff.low:+.4f}, {diff.high:+.4f}], {_count(diff.n, 'paired seed')})."
    )


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
    rows = evals[evals["trial_id"].isin(ok["trial_id"]) & (evals["split"] == "select")
                 & (evals["model"] == "current") & evals["miou"].notna()]  # fmt: skip
    if rows.empty:
        return ok.iloc[0:0].assign(score=[]), "select mIoU"
    common = int(rows.groupby("trial_id")["step"].max().min())
    at = rows[rows["step"] == common].set_index("trial_id")["miou"]
    scored = ok[ok["trial_id"].isin(at.index)]
    label = f"select mIoU at step {common}, which every search trial reached"
    return scored.assign(score=scored["trial_id"].map(at).to_numpy()), label


def optuna_distribution(dist: dict[str, list]) -> Any:
    """The Optuna distribution of one searched parameter as the arms table writes it
    (``{"log_uniform": [low, high]}``, ``{"int": ...}``, ``{"uniform": ...}``,
    ``{"categorical": [...]}``)."""
    import optuna

    ((kind, values),) = dist.items()
    if kind == "categorical":
        return optuna.distributions.CategoricalDistribution(values)
    if kind == "int":
        return optuna.distributions.IntDistribution(*values)
    return optuna.distributions.FloatDistribution(*values, log=kind == "log_uniform")


def _importance(
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


def build(study_dir: Path, output: Path | None = None) -> Path:
    output = output or study_dir / "report.html"
    text = Report(study_dir).render()
    atomic_write_text(output, text)
    return output
