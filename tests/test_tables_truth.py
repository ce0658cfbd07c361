"""The tables and the report say what the trials did: numbers and verdicts checked against
values computed by hand, any arm names, an evaluation kept when a trial diverges right after it,
only rank 0 in the headline figures."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml
from fabricate import _row, _write_experiment

from reports.report import Report
from study.tables.export import export

ARMS = {
    "no_adapt": {"use_target": False, "multi_level": False},  # the source-only role
    "bn_only": {"multi_level": False, "lambda_adv_main": 0.0},  # the control role
    "adapted": {"multi_level": False},
}


def write_study(root, confirm: dict[str, dict[int, float]], extra_confirm=(), search=()):
    spec = {
        "name": root.name, "data": {"synthetic": {"root": "/nowhere"}},
        "train": {"num_steps": 200, "eval_every": 100}, "arms": ARMS,
        "search": {"num_samples": 1, "space": {}},
    }  # fmt: skip
    root.mkdir(parents=True)
    (root / "study.yaml").write_text(yaml.safe_dump(spec))
    trials, counter = [], 0
    rng = __import__("numpy").random.default_rng(0)
    for arm, by_seed in confirm.items():
        for seed, miou in by_seed.items():
            counter += 1
            case = {"arm": arm, "stage": "confirm", "rank": 0, "seed": seed}
            rows = [_row(rng, arm, "confirm", seed, 100 * (i + 1), i + 1, 0.3) for i in range(2)]
            rows += [_row(rng, arm, "confirm", seed, 200, 3, 0.3, split="report", model="final"),
                     _row(rng, arm, "confirm", seed, 200, 4, 0.3, split="report",
                          model="best_on_select", miou=miou)]  # fmt: skip
            trials.append((f"c{counter:07d}", {"case": case}, "TERMINATED", rows))
    trials += list(extra_confirm)
    _write_experiment(root / "ray" / "confirm", trials)
    for name, experiment in search:
        _write_experiment(root / "ray" / name, experiment)
    export(root)
    return Report(root)


T = 4.302652729911275  # Student t, 97.5%, 2 degrees of freedom


def test_the_ablation_table_and_verdicts_match_a_hand_computation(tmp_path):
    report = write_study(tmp_path / "s", {
        "no_adapt": {0: 0.30, 1: 0.32, 2: 0.34},
        "bn_only": {0: 0.33, 1: 0.36, 2: 0.33},
        "adapted": {0: 0.45, 1: 0.48, 2: 0.48},
    })  # fmt: skip
    assert report.baselines == ["no_adapt", "bn_only"]
    html = report.ablation()
    half = T * 0.02 / math.sqrt(3)  # no_adapt: mean 0.32, sd 0.02
    assert f"0.3200 [{0.32 - half:.4f}, {0.32 + half:.4f}]" in html
    # adapted - no_adapt by seed: 0.15, 0.16, 0.14 -> mean 0.15, sd 0.01
    half = T * 0.01 / math.sqrt(3)
    assert (
        f"<b>adapted beats no_adapt</b> by 0.1500 mIoU (95% interval [{0.15 - half:+.4f}, "
        f"{0.15 + half:+.4f}], 3 paired seeds)."
    ) in html
    # adapted - bn_only: 0.12, 0.12, 0.15 -> mean 0.13, sd sqrt(0.0003)
    half = T * math.sqrt(0.0003) / math.sqrt(3)
    assert f"<b>adapted beats bn_only</b> by 0.1300 mIoU (95% interval [{0.13 - half:+.4f}" in html
    # bn_only - no_adapt: 0.03, 0.04, -0.01 -> mean 0.02: the interval includes 0, no verdict
    half = T * math.sqrt(0.0007) / math.sqrt(3)
    assert (
        "<td>bn_only &minus; no_adapt</td><td class='num'>3</td><td class='num'>"
        f"+0.0200 [{0.02 - half:+.4f}, {0.02 + half:+.4f}]</td><td>cannot tell apart</td>"
    ) in html
    assert "bn_only beats" not in html and "no_adapt &minus;" not in html
    assert [(r["arm"], r["baseline"]) for r in report.comparison_rows()] == [
        ("adapted", "bn_only"),
        ("adapted", "no_adapt"),
        ("bn_only", "no_adapt"),
    ]  # fmt: skip  (against the control, then the source-only arm; the spec's arm order)


def test_one_seed_is_shown_without_an_interval(tmp_path):
    report = write_study(tmp_path / "s", {"no_adapt": {0: 0.3}, "adapted": {0: 0.5}})
    html = report.ablation()
    assert "0.3000 (1 seed: no interval)" in html and "over 1 training seed of" in html
    assert html.count("no interval can be drawn") == 1
    assert "1 comparison with fewer than two paired seeds: no interval can be drawn" in html


LEVELS_ARMS = {
    "source": {"use_target": False, "multi_level": False},
    "single": {"multi_level": False},
    "multi": {"multi_level": True},
}


def write_levels(root, single: dict[int, float], multi: dict[int, float]):
    global ARMS
    saved, ARMS = ARMS, LEVELS_ARMS
    try:
        return write_study(root, {"source": {0: 0.1, 1: 0.12, 2: 0.11}, "single": single,
                                  "multi": multi})  # fmt: skip
    finally:
        ARMS = saved


def test_multi_level_against_single_level_is_compared_by_default_with_its_interval(tmp_path):
    # multi - single by seed: 0.02, 0.03, 0.04 -> mean 0.03, sd 0.01
    report = write_levels(tmp_path / "s", {0: 0.40, 1: 0.41, 2: 0.42}, {0: 0.42, 1: 0.44, 2: 0.46})
    pairs = report.comparison_rows()
    assert (pairs[0]["arm"], pairs[0]["baseline"]) == ("multi", "single")  # the headline first
    diff = pairs[0]["diff"]
    half = T * 0.01 / math.sqrt(3)
    assert (diff.mean, diff.low, diff.high, diff.n) == pytest.approx(
        (0.03, 0.03 - half, 0.03 + half, 3)
    )
    html = report.ablation()
    assert (
        f"<b>multi beats single</b> by 0.0300 mIoU (95% interval [{0.03 - half:+.4f}, "
        f"{0.03 + half:+.4f}], 3 paired seeds)."
    ) in html
    assert "<td>multi &minus; single</td>" in html
    text = report.ablation_text()
    assert "multi - single" in text and "better" in text
    summary = report.summary_pairs()[0]
    assert summary["arm"] == "multi" and summary["baseline"] == "single"
    assert summary["difference"] == pytest.approx(0.03) and summary["verdict"] == "better"


def test_multi_level_within_noise_of_single_level_gets_no_verdict(tmp_path):
    # multi - single by seed: +0.02, -0.03, +0.04: the interval includes 0
    report = write_levels(tmp_path / "s", {0: 0.40, 1: 0.41, 2: 0.42}, {0: 0.42, 1: 0.38, 2: 0.46})
    html = report.ablation()
    assert "<td>multi &minus; single</td>" in html
    assert "multi beats single" not in html and "multi is worse than single" not in html
    assert report.summary_pairs()[0]["verdict"] == "cannot tell apart"


@pytest.mark.parametrize("seeds", [1, 2, 3, 10])
def test_no_miou_interval_bound_leaves_zero_to_one(tmp_path, seeds):
    # Far apart values near both ends: a t-interval over few seeds reaches past [0, 1].
    values = {s: (0.02 if s % 2 else 0.97) for s in range(seeds)}
    other = {s: (0.99 if s % 2 else 0.01) for s in range(seeds)}
    report = write_study(tmp_path / "s", {"no_adapt": other, "adapted": values})
    for row in report.arm_rows():
        for interval in (row["best"], row["final"]):
            assert interval.n < 2 or 0.0 <= interval.low <= interval.high <= 1.0
    for row in report.comparison_rows():
        assert row["diff"].n < 2 or -1.0 <= row["diff"].low <= row["diff"].high <= 1.0
    html = report.ablation()
    if seeds in (2, 3):
        assert "\u2020" in html and "was cut" in html  # the clipped mark and what it means


def test_a_trial_that_diverges_right_after_an_evaluation_keeps_that_evaluation(tmp_path):
    from adaptseg.trainer import NonFiniteLossError
    from study.stages.trainable import ending_row

    base = {"arm": "adapted", "stage": "search", "seed": 1234}
    rows = [
        {**base, "step": 100, "split": "select", "miou": 0.31, "training_iteration": 1,
         "iterations_since_restore": 1, "status": "ok"},
        {**base, "step": 200, "split": "select", "miou": 0.35, "training_iteration": 2,
         "iterations_since_restore": 2, "status": "ok"},
        {**ending_row(NonFiniteLossError(200, {"loss_seg_src_main": math.nan}), 200, base),
         "training_iteration": 3, "iterations_since_restore": 3},
    ]  # fmt: skip
    search = [("search-adapted", [("d0000001", {"arm": "adapted", "stage": "search"},
                                   "TERMINATED", rows)])]  # fmt: skip
    write_study(tmp_path / "s", {"adapted": {0: 0.5}}, search=search)
    trials = pd.read_parquet(tmp_path / "s" / "tables" / "trials.parquet")
    row = trials[trials["stage"] == "search"].iloc[0]
    assert row["status"] == "diverged" and row["best_miou"] == 0.35 and row["best_step"] == 200
    assert row["final_miou"] == 0.35 and "at step 200" in row["error"]
    evals = pd.read_parquet(tmp_path / "s" / "tables" / "evals.parquet")
    evals = evals[evals["stage"] == "search"]
    assert list(zip(evals["step"], evals["model"])) == [(100, "current"), (200, "current"),
                                                         (200, "diverged")]  # fmt: skip
    lines = tmp_path / "s" / "ray" / "search-adapted" / "train_trial_d0000001" / "result.json"
    assert max(json.loads(x)["miou"] for x in lines.read_text().splitlines()[:2]) == 0.35


def test_with_top_k_2_the_headline_figures_use_rank_0_only(tmp_path):
    rng = __import__("numpy").random.default_rng(1)
    case = {"arm": "adapted", "stage": "confirm", "rank": 1, "seed": 0}
    rows = [_row(rng, "adapted", "confirm", 0, 200, 1, 0.9, split="report", model=m, miou=0.99)
            for m in ("final", "best_on_select")]  # fmt: skip
    report = write_study(
        tmp_path / "s", {"adapted": {0: 0.5}, "no_adapt": {0: 0.3}},
        extra_confirm=[("r1000000", {"case": case}, "TERMINATED", rows)],
    )  # fmt: skip
    assert report.confirm_scores("best_on_select")["adapted"] == {0: 0.5}
    trials = report.trials.set_index("trial_id")
    rank_1 = report.class_iou[report.class_iou["trial_id"] == "r1000000"]
    assert not rank_1.empty and trials.loc["r1000000", "rank"] == 1
    used = report.per_class_rows()
    assert set(used["arm"]) == {"adapted", "no_adapt"} and "r1000000" not in set(used["trial_id"])


def test_with_few_completed_trials_importance_explains_the_mIoU_at_a_common_step(tmp_path):
    from fabricate import fabricate

    from reports.importance import importance_scores

    root = tmp_path / "few"
    fabricate(root, trials_per_arm=4, evals=3)  # trials 0 and 3 of each arm stop early
    export(root)
    report = Report(root)
    rows, label = importance_scores(report.trials, report.evals, "multi_level")
    assert label == "select mIoU at step 1000, which every search trial reached"
    assert len(rows) == 4 and rows["score"].notna().all()
    first = report.evals[(report.evals["step"] == 1000) & (report.evals["stage"] == "search")]
    assert set(rows["score"]) == set(first[first["arm"] == "multi_level"]["miou"])
    many = tmp_path / "many"
    fabricate(many, trials_per_arm=6, evals=3)
    export(many)
    report = Report(many)
    rows, label = importance_scores(report.trials, report.evals, "multi_level")
    assert label == "final select mIoU" and len(rows) == 4
