"""The same spec on the same machine gives the same answer: two runs of a study with ASHA and
two trials at once choose the same confirm configs and write the same trial rows, whatever
order the concurrent trials' results arrived in (study.stages.ask_order)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from invariants import check_study
from study_helpers import run_study, tiny_spec, write_spec
from test_study import bench  # noqa: F401  (the shared synthetic benchmark fixture)

COLUMNS = ["arm", "stage", "config", "status", "best_miou", "step_reached"]


def rows(root) -> list[tuple]:
    trials = pd.read_parquet(root / "tables" / "trials.parquet")
    return sorted(tuple(row) for row in trials[COLUMNS].itertuples(index=False))


@pytest.mark.slow
def test_two_runs_of_one_spec_choose_and_record_the_same(tmp_path, bench):  # noqa: F811
    spec = tiny_spec(
        bench,
        search={"num_samples": 4},
        train={"num_steps": 8, "schedule_steps": 8, "eval_every": 2},
        scheduler={"grace_period": 2, "reduction_factor": 2},
    )
    spec_path = write_spec(tmp_path, spec)
    roots = []
    for run in ("first", "second"):
        result = run_study(spec_path, tmp_path / run)
        assert result.returncode == 0, result.stderr[-3000:]
        roots.append(tmp_path / run / "tiny")
    plans = [json.loads((root / "confirm_plan.json").read_text()) for root in roots]
    assert plans[0] == plans[1]
    assert rows(roots[0]) == rows(roots[1])
    first = pd.read_parquet(roots[0] / "tables" / "trials.parquet")
    assert (first["status"] == "early_stopped").any(), "ASHA stopped nothing: no test of it"
    for root in roots:
        check_study(root, spec)  # and Optuna holds every report at its step


@pytest.mark.slow
def test_a_repeated_search_confirms_each_repeats_pick_and_reports_their_spread(tmp_path, bench):  # noqa: F811
    spec = tiny_spec(bench, search={"num_samples": 2, "repeats": 2}, confirm={"seeds": [0, 1]})
    result = run_study(write_spec(tmp_path, spec), tmp_path / "results")
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "results" / "tiny"
    check_study(root, spec)  # 2 x 2 search trials per arm, each repeat its own Optuna study
    trials = pd.read_parquet(root / "tables" / "trials.parquet")
    search = trials[trials["stage"] == "search"]
    first = search[search["repeat"] == 1].sort_values("trial_id")["lr"].tolist()
    second = search[search["repeat"] == 2].sort_values("trial_id")["lr"].tolist()
    assert set(first).isdisjoint(second), "the repeats drew the same configs: one sampler seed"
    confirm = trials[trials["stage"] == "confirm"]
    assert sorted(confirm.groupby("repeat").size().items()) == [(1, 4), (2, 4)]  # 2 arms x 2 seeds
    assert "search repeats" in result.stdout and "spread" in result.stdout
    html = (root / "report.html").read_text()
    assert "The search&#x27;s own noise" in html or "The search's own noise" in html
    summary = json.loads((root / "summary.json").read_text())
    assert summary["arms"]["single_level"]["seeds"] == 2  # the headline: repeat 1 only
