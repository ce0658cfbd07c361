"""The confirm stage's choices and the study's summary, on hand-made trial records (no Ray)."""

from __future__ import annotations

import math

import pytest

from study.stages.selection import (
    TrialRecord,
    confirm_cases,
    finished_cases,
    missing_cases,
    pick_top,
    summarise,
)


def search(trial_id: str, lr: float, mious: list[float], steps: list[int], **extra) -> TrialRecord:
    rows = [{"step": s, "split": "select", "miou": m} for s, m in zip(steps, mious)]
    return TrialRecord(
        trial_id, {"arm": "a", "stage": "search", "lr": lr, "other": 1}, rows, **extra
    )


FULL = [100, 200, 300]


def test_trials_that_trained_to_the_end_rank_first_by_their_final_miou():
    records = [
        search("stopped-early", 1e-3, [0.9], [100]),          # best score, but partial
        search("final-0.5", 2e-3, [0.6, 0.7, 0.5], FULL),      # best 0.7, final 0.5
        search("final-0.6", 3e-3, [0.1, 0.2, 0.6], FULL),
    ]  # fmt: skip
    top = pick_top(records, ["lr"], num_steps=300, top_k=3)
    assert top == [{"lr": 3e-3}, {"lr": 2e-3}, {"lr": 1e-3}]
    assert pick_top(records, ["lr"], num_steps=300, top_k=1) == [{"lr": 3e-3}]


def test_partial_trials_rank_by_their_best_when_none_finished():
    records = [
        search("x", 1e-3, [0.2, 0.4], [100, 200]),
        search("y", 2e-3, [0.5, 0.1], [100, 200]),
    ]
    assert pick_top(records, ["lr"], num_steps=300, top_k=2) == [{"lr": 2e-3}, {"lr": 1e-3}]


def test_errored_diverged_and_empty_trials_never_qualify():
    records = [
        search("errored", 1e-3, [0.9, 0.9, 0.9], FULL, errored=True),
        search("diverged", 2e-3, [0.8, math.nan], [100, 200]),
        search("empty", 3e-3, [], []),
        search("ok", 4e-3, [0.1, 0.1, 0.1], FULL),
    ]
    assert pick_top(records, ["lr"], num_steps=300, top_k=4) == [{"lr": 4e-3}]


def test_only_searched_keys_are_carried_and_top_k_zero_picks_nothing():
    records = [search("x", 1e-3, [0.5, 0.5, 0.5], FULL)]
    assert pick_top(records, ["lr"], num_steps=300, top_k=1) == [{"lr": 1e-3}]
    assert pick_top(records, ["lr"], num_steps=300, top_k=0) == []


def test_confirm_cases_cover_every_arm_rank_and_seed_in_the_given_order():
    cases = confirm_cases({"b": [{"lr": 1}, {"lr": 2}], "a": [{"lr": 3}]}, seeds=[7, 8])
    assert [(c["arm"], c["rank"], c["seed"], c["lr"]) for c in cases] == [
        ("b", 0, 7, 1), ("b", 0, 8, 1), ("b", 1, 7, 2), ("b", 1, 8, 2), ("a", 0, 7, 3),
        ("a", 0, 8, 3),
    ]  # fmt: skip
    assert all(c["stage"] == "confirm" for c in cases)


def test_a_repeats_cases_name_it_from_the_second_repeat_on():
    picks = {("a", 1): [{"lr": 1}], ("a", 2): [{"lr": 2}], ("a", 3): [{"lr": 3}], "b": [{"lr": 4}]}
    cases = confirm_cases(picks, seeds=[0])
    assert cases == [
        {"arm": "a", "stage": "confirm", "rank": 0, "seed": 0, "lr": 1},
        {"arm": "a", "stage": "confirm", "rank": 0, "seed": 0, "repeat": 2, "lr": 2},
        {"arm": "a", "stage": "confirm", "rank": 0, "seed": 0, "repeat": 3, "lr": 3},
        {"arm": "b", "stage": "confirm", "rank": 0, "seed": 0, "lr": 4},
    ]


def test_the_summary_is_the_first_repeats_pick_only():
    """Later repeats' picks are the search's own noise (reported apart), not the headline."""
    first = confirm("a", 0, 0, 0.5)
    later = confirm("a", 0, 1, 0.1)
    later.case["repeat"] = 2
    assert summarise([first, later])["a"]["seeds"] == 1
    assert summarise([first, later])["a"]["report_miou_mean"] == 0.5


def confirm(arm: str, rank: int, seed: int, miou: float | None, errored: bool = False):
    rows = [{"step": 300, "split": "select", "miou": 0.1}]
    if miou is not None:
        rows += [{"split": "report", "model": "final", "miou": miou - 0.01},
                 {"split": "report", "model": "best_on_select", "miou": miou}]  # fmt: skip
    case = {"arm": arm, "rank": rank, "seed": seed, "stage": "confirm"}
    return TrialRecord(f"{arm}{rank}{seed}", {"case": case}, rows, errored)


def test_missing_cases_are_those_no_trial_finished_without_an_error():
    cases = confirm_cases({"a": [{}]}, seeds=[0, 1, 2])
    records = [confirm("a", 0, 0, 0.5), confirm("a", 0, 1, 0.5, errored=True)]
    assert finished_cases(records) == {("a", 0, ())}  # (arm, seed, sampled values)
    assert missing_cases(cases, records) == [("a", 0, 1), ("a", 0, 2)]


def test_the_summary_is_the_rank_0_config_over_seeds_with_no_sd_for_one_seed():
    records = [
        confirm("a", 0, 0, 0.5), confirm("a", 0, 1, 0.7),
        confirm("a", 1, 0, 0.1), confirm("a", 1, 1, 0.1),   # rank 1: not pooled in
        confirm("b", 0, 0, 0.3),
        confirm("b", 0, 1, None), confirm("b", 0, 2, 0.9, errored=True),
    ]  # fmt: skip
    summary = summarise(records)
    assert summary["a"]["seeds"] == 2 and summary["a"]["report_miou_mean"] == pytest.approx(0.6)
    assert summary["a"]["report_miou_sd"] == pytest.approx(math.sqrt(0.02))
    assert summary["b"] == {"report_miou_mean": 0.3, "report_miou_sd": None, "seeds": 1}


def test_an_errored_confirm_trial_is_retried_where_it_is_not_run_again_elsewhere():
    from study.stages.selection import unstarted_cases

    cases = confirm_cases({"a": [{}]}, seeds=[0, 1, 2])
    records = [confirm("a", 0, 0, 0.5), confirm("a", 0, 1, None, errored=True),
               TrialRecord("configless", {})]  # fmt: skip
    assert [c["seed"] for c in unstarted_cases(cases, records)] == [2]
    assert missing_cases(cases, records) == [("a", 0, 1), ("a", 0, 2)]


def test_ranking_is_by_score_not_by_trial_id_and_ties_keep_the_order_trials_ran_in():
    records = [
        search("a-first", 1e-3, [0.1, 0.2, 0.4], FULL),
        search("b-second", 2e-3, [0.1, 0.2, 0.3], FULL),
        search("c-tie", 3e-3, [0.1, 0.2, 0.4], FULL),   # ties with a-first: ran later
    ]  # fmt: skip
    assert pick_top(records, ["lr"], 300, top_k=3) == [{"lr": 1e-3}, {"lr": 3e-3}, {"lr": 2e-3}]


def test_only_select_rows_rank_a_search_trial_and_rows_without_a_split_are_select_rows():
    record = search("t", 1e-3, [0.2, 0.3], [100, 300])
    record.rows.append({"step": 300, "split": "report", "model": "final", "miou": 0.99})
    plain = TrialRecord("u", {"arm": "a", "lr": 2e-3}, [{"step": 300, "miou": 0.5}])
    assert pick_top([record, plain], ["lr"], 300, top_k=2) == [{"lr": 2e-3}, {"lr": 1e-3}]


def test_the_summary_uses_the_current_plans_ranks_and_skips_search_trials():
    def ran(rank: int, lr: float, miou: float) -> TrialRecord:
        case = {"arm": "a", "stage": "confirm", "rank": rank, "seed": 0, "lr": lr}
        rows = [{"split": "report", "model": "best_on_select", "miou": miou}]
        return TrialRecord(f"r{rank}", {"case": case}, rows)

    records = [search("s", 1e-3, [0.4], [300]), ran(1, 1e-3, 0.5), ran(0, 2e-3, 0.2)]
    assert summarise(records)["a"]["report_miou_mean"] == pytest.approx(0.2)
    # A grown study re-ranked its configs: lr 1e-3, which ran as rank 1, is rank 0 now.
    plan = [{**records[1].case, "rank": 0}, {**records[2].case, "rank": 1}]
    assert summarise(records, plan)["a"] == {
        "report_miou_mean": pytest.approx(0.5),
        "report_miou_sd": None,
        "seeds": 1,
    }


def test_the_summary_reads_the_report_split_of_the_best_on_select_weights_only():
    record = confirm("a", 0, 0, 0.5)
    record.rows.append({"split": "report", "model": "final", "miou": 0.8})
    record.rows.append({"split": "select", "model": "best_on_select", "miou": 0.9})
    assert summarise([record])["a"]["report_miou_mean"] == pytest.approx(0.5)
