"""The search's own noise: when each arm's search ran more than once (``search.repeats``), what
each repeat's pick scored in the confirm stage, per arm and per comparison, and how far the
repeats spread. The intervals over confirm seeds do not cover this: they hold the chosen
configs fixed."""

from __future__ import annotations

import statistics

import pandas as pd

from reports.text import esc


def repeat_scores(trials: pd.DataFrame) -> dict[str, dict[int, dict[int, float]]]:
    """arm -> repeat -> seed -> report-split mIoU (best-on-select) of the repeat's rank-0 pick."""
    confirm = trials[(trials["stage"] == "confirm") & (trials["rank"] == 0)]
    confirm = confirm[confirm["current"].fillna(True).astype(bool)]
    out: dict[str, dict[int, dict[int, float]]] = {}
    for row in confirm.itertuples():
        value = row.report_miou_best_on_select
        if value is not None and not pd.isna(value):
            repeat = int(row.repeat) if not pd.isna(row.repeat) else 1
            out.setdefault(row.arm, {}).setdefault(repeat, {})[int(row.seed)] = float(value)
    return out


def repeat_rows(trials: pd.DataFrame, arms: list[str], pairs: list[tuple[str, str]]) -> list[dict]:
    """One row per arm and per comparison with results in two or more repeats: each repeat's
    mean over the seeds (a comparison: its seed-paired mean difference) and the spread
    (largest minus smallest)."""
    scores = repeat_scores(trials)
    rows = []
    for arm in arms:
        means = {r: statistics.fmean(s.values()) for r, s in sorted(scores.get(arm, {}).items())}
        if len(means) > 1:
            rows.append({"what": arm, "means": means})
    for arm, base in pairs:
        means = {}
        for repeat in sorted(set(scores.get(arm, {})) & set(scores.get(base, {}))):
            a, b = scores[arm][repeat], scores[base][repeat]
            shared = sorted(set(a) & set(b))
            if shared:
                means[repeat] = statistics.fmean(a[s] - b[s] for s in shared)
        if len(means) > 1:
            rows.append({"what": f"{arm} - {base}", "means": means})
    for row in rows:
        row["spread"] = max(row["means"].values()) - min(row["means"].values())
    return rows


def repeats_html(rows: list[dict]) -> str:
    if not rows:
        return ""
    repeats = sorted({r for row in rows for r in row["means"]})
    head = "".join(f"<th>repeat {r}</th>" for r in repeats)
    body = "".join(
        f"<tr><td>{esc(row['what'])}</td>"
        + "".join(
            f"<td class='num'>{row['means'][r]:+.4f}</td>" if r in row["means"] else "<td></td>"
            for r in repeats
        )
        + f"<td class='num'>{row['spread']:.4f}</td></tr>"
        for row in rows
    )
    return (
        "<h3>The search's own noise (search.repeats)</h3><p class='note'>Each repeat ran the "
        "arm's search again with another sampler seed and confirmed its own pick on the same "
        "seeds: the mean over seeds of each repeat, and how far the repeats spread. The "
        "intervals above hold the chosen configs fixed and do not include this.</p>"
        f"<table><tr><th>arm or comparison</th>{head}<th>spread</th></tr>{body}</table>"
    )
