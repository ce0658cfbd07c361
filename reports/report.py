"""The offline HTML ablation report of a study, from its tables alone: what ``python -m
reports.build`` writes (the command line is in ``reports/build.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.offline

from adaptseg.fileio import atomic_write_text
from reports import figures, sections
from reports.layout import StudyFolder
from reports.repeats import repeat_rows, repeats_html
from reports.stats import miou_interval, paired_difference
from reports.status import status_rows
from reports.subsets import SYNTHIA_SUBSETS, subset_scores
from reports.text import (
    columns,
    count,
    duration,
    esc,
    interval_text,
    number,
    optional,
    short_verdict,
    verdict_sentence,
)

BASELINE_ORDER = ("source_only", "bn_control")  # roles, bottom first (the arms table's `role`)
CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#222}
h1{margin-bottom:.2rem} h2{margin-top:2.2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8rem 0} td,th{border:1px solid #ccc;padding:.3rem .6rem}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#555;font-size:.92rem} .verdict{background:#f6f9ff;border-left:4px solid #1f77b4;
padding:.5rem 1rem} pre{background:#f7f7f7;padding:.8rem;overflow:auto;font-size:.85rem}
"""


class Report:
    """The sections of one report, assembled from the tables."""

    def __init__(self, study_dir: Path) -> None:
        folder = StudyFolder(study_dir)
        self.trials = pd.read_parquet(folder.table("trials"))
        self.evals = pd.read_parquet(folder.table("evals"))
        self.class_iou = pd.read_parquet(folder.table("class_iou"))
        self.spec_text = folder.spec_file.read_text() if folder.spec_file.exists() else ""
        provenance = folder.provenance
        self.provenance = json.loads(provenance.read_text()) if provenance.exists() else {}
        self.arm_table = pd.read_parquet(folder.table("arms")).sort_values("order")
        pairs = pd.read_parquet(folder.table("comparisons"))
        self.arms = list(self.arm_table["arm"])
        self.name = (
            str(self.arm_table["study"].iloc[0]) if len(self.arm_table) else folder.root.name
        )
        roles = self._column("role")
        self.baselines = [
            next(a for a in self.arms if roles.get(a) == role)
            for role in BASELINE_ORDER
            if role in roles.values()
        ]
        self.pairs = [(r.arm, r.baseline) for r in pairs.sort_values("order").itertuples()]
        self.searched = {
            arm: json.loads(text) for arm, text in self._column("searched").items() if text
        }
        self.folder = folder
        self.figure_count = 0
        # What mIoU averages over (the study's metric), and for a SYNTHIA study both subsets.
        counts = {int(n) for n in self._column("eval_classes").values() if n is not None}
        self.classes = counts.pop() if len(counts) == 1 else None
        sources = set(self._column("source").values())
        self.subsets = SYNTHIA_SUBSETS if "synthia" in sources else ()

    @property
    def metric(self) -> str:
        """The study's mIoU, named by the classes it averages over (``mIoU-19``, ``mIoU-13``)."""
        return f"mIoU-{self.classes}" if self.classes else "mIoU"

    def _column(self, name: str) -> dict[str, Any]:
        """arm -> the arms table's ``name`` (empty without the column: a study whose spec this
        version cannot validate has its arms without roles)."""
        if name not in self.arm_table:
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
        trials = self.trials
        first = trials["repeat"].fillna(1) == 1  # repeats of the search: reports/repeats.py
        confirm = trials[(trials["stage"] == "confirm") & (trials["rank"] == 0) & first]
        return confirm[confirm["current"].fillna(True).astype(bool)]

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
        """Per arm and stage: trials done, running, errored and not started, and the best
        select mIoU so far (``reports.status``)."""
        planned = {
            "search": self._column("planned_search"),
            "confirm": self._column("planned_confirm"),
        }
        return status_rows(self.trials, self.arms, planned)

    def status(self) -> str:
        state = _read_optional(self.folder.table("status"))
        if state is None or state.empty:
            line = "No status recorded (tables exported by hand)."
        else:
            row = state.iloc[0]
            if row["state"] == "complete":
                line = "<b>Complete.</b>"
            elif row["state"] == "running":
                left = row["seconds_left"]
                when = f"; {duration(left)} left in this stage" if pd.notna(left) else ""
                line = f"<b>Running</b>: {esc(row['stage'])}{when}."
            else:
                line = f"<b>{esc(str(row['state']).capitalize())}</b> during {esc(row['stage'])}."
            line += f" <span class='note'>Updated {esc(row['updated'])}.</span>"
        body = "".join(
            f"<tr><td>{esc(r['arm'])}</td><td>{r['stage']}</td><td class='num'>{r['done']}</td>"
            f"<td class='num'>{r['running']}</td><td class='num'>"
            f"{'' if r['pending'] is None else r['pending']}</td><td class='num'>{r['errored']}"
            f"</td><td class='num'>{optional(r['best'])}</td></tr>"
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
        subsets = {n: subset_scores(self.class_iou, self.headline_trials(), n)
                   for n in self.subsets}  # fmt: skip
        return [
            {
                "arm": arm,
                "role": roles.get(arm) or "",
                "method": self._column("method").get(arm) or "",
                "model": self._column("model").get(arm) or "",
                "seeds": len(scores[arm]),
                "best": miou_interval(list(scores[arm].values())),
                "final": miou_interval(list(finals.get(arm, {}).values())),
                "subsets": {
                    n: miou_interval(list(subsets[n].get(arm, {}).values())) for n in self.subsets
                },
            }
            for arm in self.arms
            if arm in scores
        ]

    def comparison_rows(self) -> list[dict[str, Any]]:
        """Per compared pair with confirm results on both sides: the paired difference a - b
        over their shared seeds (best-on-select, report split) and its verdict."""
        scores = self.confirm_scores("best_on_select")
        rows = []
        for arm, base in self.pairs:
            if arm in scores and base in scores:
                diff = paired_difference(scores[arm], scores[base])
                rows.append(
                    {
                        "arm": arm,
                        "baseline": base,
                        "diff": diff,
                        "verdict": verdict_sentence(arm, base, diff),
                    }
                )
        return rows

    def ablation(self) -> str:
        arms = self.arm_rows()
        if not arms:
            return "<p>No confirm-stage results yet (this table needs the confirm stage).</p>"
        head = (
            "<tr><th>arm</th><th>role</th><th>method</th><th>model</th><th>seeds</th>"
            f"<th>{self.metric}, best-on-select (report)</th>"
            f"<th>{self.metric}, final model (report)</th>"
            + "".join(f"<th>mIoU-{n}, best-on-select (report)</th>" for n in self.subsets)
            + "</tr>"
        )
        body = "".join(
            f"<tr><td>{esc(r['arm'])}</td><td>{esc(r['role'])}</td><td>{esc(r['method'])}</td>"
            f"<td>{esc(r['model'])}</td><td class='num'>"
            f"{r['seeds']}</td><td class='num'>{interval_text(r['best'])}</td>"
            f"<td class='num'>{interval_text(r['final'])}</td>"
            + "".join(
                f"<td class='num'>{interval_text(r['subsets'][n])}</td>" for n in self.subsets
            )
            + "</tr>"
            for r in arms
        )
        pairs = self.comparison_rows()
        compared = "".join(
            f"<tr><td>{esc(r['arm'])} &minus; {esc(r['baseline'])}</td><td class='num'>"
            f"{r['diff'].n}</td><td class='num'>{interval_text(r['diff'], signed=True)}</td>"
            f"<td>{short_verdict(r['diff'])}</td></tr>"
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
        models = self._column("model")
        verdicts += [
            f"{esc(r['arm'])} and {esc(r['baseline'])} ran different models "
            f"({esc(models[r['arm']])} against {esc(models[r['baseline']])}): their difference "
            "mixes the method with the model."
            for r in pairs
            if models.get(r["arm"]) != models.get(r["baseline"])
        ]
        few = [r for r in pairs if r["diff"].n < 2]
        if few:
            verdicts.append(
                f"{len(few)} comparison{'s' if len(few) > 1 else ''} with fewer than two paired "
                "seeds: no interval can be drawn (add seeds to confirm.seeds)."
            )
        if pairs and not verdicts:
            verdicts.append(
                "No comparison's interval excludes 0: the study cannot tell these "
                "arms apart at this number of seeds."
            )
        seeds = max(r["seeds"] for r in arms)
        clipped = any(r["best"].clipped or r["final"].clipped for r in arms) or any(
            r["diff"].clipped for r in pairs
        )
        note = (
            f"<p class='note'>Intervals are 95% Student-t intervals over "
            f"{count(seeds, 'training seed')} of the configs each arm's search chose (they "
            "cover the training noise, not the search's: a repeated search shows that), cut to "
            "the range the quantity can take ([0, 1] for an mIoU, [-1, 1] for a difference)"
            + ("; &dagger; marks an interval that reached past it and was cut" if clipped else "")
            + ". With so few seeds they are wide; an interval that includes 0 means the study "
            "cannot tell the arms apart, not that they are equal. A verdict is given only "
            "where the interval excludes 0.</p>"
        )
        repeats = repeats_html(repeat_rows(self.trials, self.arms, self.pairs))
        return (
            f"<table>{head}{body}</table>{comparisons}{note}"
            f"<div class='verdict'>{'<br>'.join(verdicts)}</div>{repeats}"
        )

    def ablation_text(self) -> str:
        """The ablation for the terminal at the end of a study: the arms, then the pairs."""
        arms = self.arm_rows()
        if not arms:
            return "no confirm-stage results"
        lines = [["arm", "seeds", "mIoU (report, best-on-select)"]]
        lines += [[r["arm"], str(r["seeds"]), interval_text(r["best"])] for r in arms]
        pairs = self.comparison_rows()
        compared = [["comparison", "seeds", "difference (paired)", "verdict"]]
        compared += [
            [
                f"{r['arm']} - {r['baseline']}",
                str(r["diff"].n),
                interval_text(r["diff"], signed=True),
                short_verdict(r["diff"], html_text=False),
            ]
            for r in pairs
        ]
        text = columns(lines) + ("\n\n" + columns(compared) if pairs else "")
        spread = repeat_rows(self.trials, self.arms, self.pairs)
        if spread:
            table = [["search repeats", *[f"repeat {r}" for r in spread[0]["means"]], "spread"]]
            table += [
                [
                    row["what"],
                    *[f"{m:+.4f}" for m in row["means"].values()],
                    f"{row['spread']:.4f}",
                ]
                for row in spread
            ]
            text += "\n\n" + columns(table)
        return text

    def summary_pairs(self) -> list[dict[str, Any]]:
        """The comparisons for ``summary.json``."""
        return [
            {
                "arm": r["arm"],
                "baseline": r["baseline"],
                "difference": number(r["diff"].mean),
                "low": number(r["diff"].low),
                "high": number(r["diff"].high),
                "paired_seeds": r["diff"].n,
                "clipped": r["diff"].clipped,
                "verdict": short_verdict(r["diff"], html_text=False),
            }
            for r in self.comparison_rows()
        ]

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
        parts = [
            ("Status", self.status()),
            ("Does adaptation help? (confirm stage, report split)", self.ablation()),
            ("Per class", self.per_class()),
            ("Learning curves (select split)", self.curves()),
            (
                "Hyperparameters (search stage, select split)",
                sections.hyperparameters_section(self),
            ),
            ("Parameter importance (search stage)", sections.importance_section(self)),
            ("GAN balance", sections.gan_section(self)),
            ("Cost", sections.cost_section(self)),
            ("Provenance", self.provenance_section()),
        ]
        body = "".join(f"<h2>{esc(title)}</h2>{content}" for title, content in parts)
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


def _read_optional(path: Path) -> pd.DataFrame | None:
    return pd.read_parquet(path) if path.exists() else None


def build(study_dir: Path, output: Path | None = None) -> Path:
    output = output or StudyFolder(study_dir).report
    text = Report(study_dir).render()
    atomic_write_text(output, text)
    return output
