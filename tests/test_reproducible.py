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
