"""``python -m reports.build results/<study> [-o FILE]``: one offline HTML ablation report.

Reads only the study's tables (``tables/*.parquet``), its ``study.yaml`` and
``provenance.json``: no Ray, no torch. plotly.js is embedded once, every user string is
escaped, and the same tables give the same bytes.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.offline
import yaml

from adaptseg.fileio import atomic_write_text
from reports import figures
from reports.stats import Interval, mean_ci, paired_difference
from study.spec import StudySpec, baseline_arms

BASELINE_ORDER = ("source_only", "bn_control")  # roles, bottom first (study.spec.baseline_arms)
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
        self.spec_text = (study_dir / "study.yaml").read_text()
        self.spec = StudySpec.model_validate(yaml.safe_load(self.spec_text))
        provenance = study_dir / "provenance.json"
        self.provenance = json.loads(provenance.read_text()) if provenance.exists() else {}
        self.arms = list(self.spec.arms)
        roles = baseline_arms(self.spec)
        self.baselines = [roles[role] for role in BASELINE_ORDER if role in roles]
        self.figure_count = 0

    # --- helpers ---------------------------------------------------------------------------
    def figure(self, fig: go.Figure) -> str:
        self.figure_count += 1
        return fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"figure-{self.figure_count}",
            config={"displaylogo": False},
        )

    def confirm_scores(self, model: str) -> dict[str, dict[int, float]]:
        """Per arm, seed -> report-split mIoU of the rank-0 config (``model``: final or
        best_on_select)."""
        column = f"report_miou_{model}"
        rows = self.trials[(self.trials["stage"] == "confirm") & (self.trials["rank"] == 0)]
        out: dict[str, dict[int, float]] = {}
        for row in rows.itertuples():
            value = getattr(row, column)
            if value is not None and not pd.isna(value):
                out.setdefault(row.arm, {})[int(row.seed)] = float(value)
        return out

    # --- sections --------------------------------------------------------------------------
    def ablation_rows(self) -> list[dict[str, Any]]:
        """Per arm with confirm results: seeds, the best-on-select and final-model intervals,
        and the paired difference to each baseline it is compared with (None: not compared)."""
        scores = self.confirm_scores("best_on_select")
        finals = self.confirm_scores("final")
        rows = []
        for arm in [a for a in self.arms if a in scores]:
            diffs: dict[str, Interval | None] = {}
            for base in self.baselines:
                # the source-only arm is the bottom baseline: never compared against the control
                order = self.baselines
                skip = arm in order and order.index(arm) <= order.index(base)
                compared = not skip and base in scores
                diffs[base] = paired_difference(scores[arm], scores[base]) if compared else None
            rows.append({
                "arm": arm, "seeds": len(scores[arm]),
                "best": mean_ci(list(scores[arm].values())),
                "final": mean_ci(list(finals.get(arm, {}).values())), "diffs": diffs,
            })  # fmt: skip
        return rows

    def ablation(self) -> str:
        rows = self.ablation_rows()
        if not rows:
            return "<p>No confirm-stage results yet (this table needs the confirm stage).</p>"
        head = (
            "<tr><th>arm</th><th>seeds</th><th>mIoU, best-on-select (report)</th>"
            "<th>mIoU, final model (report)</th>"
            + "".join(f"<th>minus {esc(b)} (paired)</th>" for b in self.baselines)
            + "</tr>"
        )
        body, verdicts = [], []
        for row in rows:
            cells = [esc(row["arm"]), str(row["seeds"]), _interval(row["best"]),
                     _interval(row["final"])]  # fmt: skip
            for base, diff in row["diffs"].items():
                cells.append("" if diff is None else _interval(diff, signed=True))
                if diff is not None:
                    verdicts.append(_verdict(row["arm"], base, diff))
            body.append(
                "<tr>"
                + "".join(
                    f"<td class='num'>{c}</td>" if i else f"<td>{c}</td>"
                    for i, c in enumerate(cells)
                )
                + "</tr>"
            )
        seeds = max(row["seeds"] for row in rows)
        caution = (
            f"<p class='note'>Intervals are 95% Student-t intervals over {seeds} seeds; "
            "with so few seeds they are wide, and an interval that includes 0 means the "
            "study cannot tell the arms apart, not that they are equal.</p>"
        )
        return (
            f"<table>{head}{''.join(body)}</table>{caution}"
            f"<div class='verdict'>{'<br>'.join(verdicts) or 'No baseline arm.'}</div>"
        )

    def ablation_text(self) -> str:
        """The ablation table as plain text, for the terminal at the end of a study."""
        rows = self.ablation_rows()
        if not rows:
            return "no confirm-stage results"
        header = ["arm", "seeds", "mIoU (report, best-on-select)"]
        header += [f"minus {base}" for base in self.baselines]
        lines = [header]
        for row in rows:
            line = [row["arm"], str(row["seeds"]), _interval(row["best"])]
            line += ["" if d is None else _interval(d, signed=True) for d in row["diffs"].values()]
            lines.append(line)
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in lines
        )

    def per_class_rows(self) -> pd.DataFrame:
        """Per-class IoU of the headline: rank-0 confirm trials, best-on-select, report split."""
        best = self.trials[(self.trials["stage"] == "confirm") & (self.trials["rank"] == 0)]
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
        base = self.baselines[0] if self.baselines else None
        return self.figure(figures.class_heatmaps(rows, self.arms, classes, base))

    def curves(self) -> str:
        if self.evals.empty:
            return "<p>No evaluations yet.</p>"
        return self.figure(figures.learning_curves(self.evals, self.trials, self.arms))

    def hyperparameters(self) -> str:
        space = self.spec.search.space
        logs = {name for name, dist in space.items() if dist.kind == "log_uniform"}
        numeric = [name for name, dist in space.items() if dist.kind != "categorical"]
        parts = []
        for arm in self.arms:
            params = [name for name in numeric if name in self.spec.searched(arm)]
            has_rows = ((self.trials["arm"] == arm) & (self.trials["stage"] == "search")).any()
            if params and has_rows:
                parts.append(
                    self.figure(figures.parallel_coordinates(self.trials, arm, params, logs))
                )
        lambdas = [n for n in numeric if n.startswith("lambda_")]
        if lambdas:
            parts.append(self.figure(figures.sensitivity(self.trials, lambdas, self.arms, logs)))
        return "".join(parts) or "<p>No searched hyperparameters.</p>"

    def importance(self) -> str:
        values: dict[str, dict[str, float]] = {}
        notes = []
        for arm in self.arms:
            result = _importance(self.trials, self.evals, arm, self.spec)
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
        return self.figure(figures.cost(self.trials, self.arms)) if len(self.trials) else ""

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
        name = esc(self.spec.name)
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{name}: AdaptSegNet ablation report</title><style>{CSS}</style>"
            f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>"
            f"<h1>{name}</h1><p class='note'>AdaptSegNet ablation study report. Arm-level "
            "numbers say which split they were measured on: <b>select</b> (what the search "
            "optimised and ASHA saw) or <b>report</b> (held out for this report).</p>"
            f"{body}</body></html>\n"
        )


def _interval(interval: Interval, signed: bool = False) -> str:
    if interval.n == 0:
        return "-"
    sign = "+" if signed else ""
    if interval.n < 2 or math.isnan(interval.low):
        return f"{interval.mean:{sign}.4f} ({interval.n} seed: no interval)"
    return f"{interval.mean:{sign}.4f} [{interval.low:{sign}.4f}, {interval.high:{sign}.4f}]"


def _verdict(arm: str, base: str, diff: Interval) -> str:
    if diff.n < 2:
        return f"{esc(arm)} vs {esc(base)}: fewer than two paired seeds, no interval."
    if diff.excludes_zero:
        word = "beats" if diff.mean > 0 else "is worse than"
        return (
            f"<b>{esc(arm)} {word} {esc(base)}</b> by {abs(diff.mean):.4f} mIoU "
            f"(95% CI [{diff.low:+.4f}, {diff.high:+.4f}], {diff.n} paired seeds)."
        )
    return (
        f"{esc(arm)} vs {esc(base)}: no clear difference ({diff.mean:+.4f}, 95% CI "
        f"[{diff.low:+.4f}, {diff.high:+.4f}] includes 0, {diff.n} paired seeds)."
    )


def importance_scores(
    trials: pd.DataFrame, evals: pd.DataFrame, arm: str, spec: StudySpec
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


def _importance(
    trials: pd.DataFrame, evals: pd.DataFrame, arm: str, spec: StudySpec
) -> tuple[dict[str, float], str] | str:
    """optuna.importance (PED-ANOVA) over the arm's search trials, rebuilt from the tables;
    returns the importances and what they explain, or why there are none."""
    import optuna

    searched = spec.searched(arm)
    if len(searched) < 2:
        return "fewer than two searched parameters"
    rows, label = importance_scores(trials, evals, arm, spec)
    if len(rows) < 3:
        return f"{len(rows)} scored search trials; importance needs at least 3"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {name: dist.to_optuna() for name, dist in searched.items()}
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.build", description=__doc__)
    parser.add_argument("study_dir", type=Path, help="results/<study>")
    parser.add_argument("-o", "--output", type=Path, help="default: <study_dir>/report.html")
    args = parser.parse_args(argv)
    if not (args.study_dir / "tables" / "trials.parquet").is_file():
        print(
            f"error: {args.study_dir}: no tables (run python -m study.export {args.study_dir})",
            file=sys.stderr,
        )
        return 2
    path = build(args.study_dir, args.output)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
