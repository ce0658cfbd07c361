"""What the dry-run passes, the study finishes: resources checked against the cluster, only what
changes results frozen, --set before ${VAR}, --smoke of any spec, a quiet terminal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from study_helpers import (
    kill_tagged,
    ray_env,
    run_study,
    start_study,
    study_command,
    tiny_spec,
    wait_for,
    write_spec,
)
from test_study import bench  # noqa: F401  (the shared synthetic benchmark fixture)

from study.errors import SpecError
from study.records.folder import StudyPaths
from study.run import growth_of
from study.run import main as run_main
from study.spec.growth import Growth, spec_changes
from study.spec.loading import load_spec
from study.spec.schema import ResourcesSpec
from study.stages.preflight import check_resources
from study.stages.terminal import Progress, steps_left, time_left_text

REPO = Path(__file__).resolve().parents[1]
LEVELS = REPO / "search_spaces" / "levels.yaml"
LEVELS_ARMS = {"source_only", "bn_control", "single_level", "multi_level", "feature_level"}


# --- resources against the cluster -----------------------------------------------------------
@pytest.mark.parametrize(
    ("resources", "nodes", "message"),
    [
        ({"cpus_per_trial": 4}, [(2, 0)], "resources.cpus_per_trial: 4 CPU(s) per trial asked "
         "for, but the largest node of the cluster has 2 (a trial would wait for ever)"),
        ({"gpus_per_trial": 1}, [(8, 0)], "resources.gpus_per_trial: 1 GPU(s) per trial asked "
         "for, but the largest node of the cluster has 0"),
        ({"cpus_per_trial": 4, "gpus_per_trial": 1}, [(8, 0), (2, 1)],
         "resources: no node of the cluster has both 4 CPU(s) and 1 GPU(s) for a trial"),
    ],
    ids=["cpus", "gpus", "no-node-has-both"],
)  # fmt: skip
def test_resources_no_node_can_give_are_one_line(resources, nodes, message):
    with pytest.raises(SpecError) as raised:
        check_resources(ResourcesSpec(**resources), nodes, "the cluster")
    assert str(raised.value) == message


def test_auto_gpus_follow_the_cluster():
    assert check_resources(ResourcesSpec(), [(2, 0)], "c") == 0.0
    assert check_resources(ResourcesSpec(), [(2, 0), (4, 2)], "c") == 1.0
    assert check_resources(ResourcesSpec(gpus_per_trial=0.5), [(4, 1)], "c") == 0.5


def test_more_cpus_per_trial_than_ray_has_fails_the_dry_run_and_the_run_alike(tmp_path, bench):  # noqa: F811
    spec_path = write_spec(tmp_path, tiny_spec(bench, resources={"cpus_per_trial": 4}))
    expected = (
        "error: resources.cpus_per_trial: 4 CPU(s) per trial asked for, but the largest node "
        "of the Ray cluster has 2 (a trial would wait for ever)"
    )
    for extra in (["--dry-run"], []):
        result = run_study(spec_path, tmp_path / "results", *extra, timeout=180)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1] == expected
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "results" / "tiny").exists()


# --- variables and --set ---------------------------------------------------------------------
def test_set_replaces_a_variable_that_is_not_set(monkeypatch, tmp_path):
    monkeypatch.setenv("GTA5_ROOT", str(tmp_path / "gta5"))
    monkeypatch.setenv("CITYSCAPES_ROOT", str(tmp_path / "cityscapes"))
    monkeypatch.delenv("DEEPLAB_INIT", raising=False)
    with pytest.raises(SpecError, match="environment variable not set: DEEPLAB_INIT"):
        load_spec(LEVELS)
    spec = load_spec(LEVELS, ["train.init_weights=null"])
    assert spec.train["init_weights"] is None
    assert spec.data.source.root == str(tmp_path / "gta5")


# --- what is frozen ---------------------------------------------------------------------------
def test_resources_concurrency_checkpoints_retries_and_ray_change_freely(tmp_path):
    old = tiny_spec(tmp_path)
    new = tiny_spec(
        tmp_path,
        resources={"cpus_per_trial": 2, "max_concurrent_trials": 1, "gpus_per_trial": 0},
        checkpoint={"every_evals": 2, "num_to_keep": 3},
        ray={"num_cpus": 1, "address": "auto"},
        max_failures=5,
    )
    assert spec_changes(old, new) == ([], [])
    changed = tiny_spec(tmp_path, train={**old["train"], "num_steps": 8, "schedule_steps": 8})
    assert spec_changes(old, changed)[1] == ["train.num_steps", "train.schedule_steps"]


def _study_with_trials(root: Path, statuses: list[str]) -> StudyPaths:
    """A study folder whose one experiment's snapshot holds trials in ``statuses``."""
    experiment = root / "ray" / "search-source_only"
    experiment.mkdir(parents=True)
    trials = [
        [json.dumps({"trial_id": f"t{i}", "status": status, "config": {"arm": "source_only"},
                     "relative_logdir": f"t{i}"}), json.dumps({})]
        for i, status in enumerate(statuses)
    ]  # fmt: skip
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": trials})
    )
    (root / "study.yaml").write_text(yaml.safe_dump(tiny_spec(root)))
    return StudyPaths(root)


def test_a_study_with_no_finished_trial_starts_over_with_any_fix(tmp_path):
    paths = _study_with_trials(tmp_path / "tiny", ["RUNNING", "PENDING", "ERROR"])
    fixed = tiny_spec(tmp_path / "tiny", scheduler={"grace_period": 4})
    assert growth_of(paths, fixed, "study.yaml", fresh=False) == Growth(
        start_over=["scheduler.grace_period"]
    )


def test_a_study_with_a_finished_trial_refuses_a_change_naming_its_keys(tmp_path):
    paths = _study_with_trials(tmp_path / "tiny", ["TERMINATED", "RUNNING"])
    fixed = tiny_spec(tmp_path / "tiny", scheduler={"grace_period": 4})
    with pytest.raises(SpecError, match="other values for scheduler.grace_period"):
        growth_of(paths, fixed, "study.yaml", fresh=False)


def test_the_dry_run_says_a_study_without_finished_trials_starts_over(tmp_path, capsys):
    paths = _study_with_trials(tmp_path / "results" / "tiny", ["RUNNING"])
    started = write_spec(tmp_path, tiny_spec(tmp_path / "bench"))
    paths.spec_file.write_text(yaml.safe_dump(load_spec(started).dump()))  # as the run saves it
    spec_path = write_spec(tmp_path, tiny_spec(tmp_path / "bench", scheduler={"grace_period": 4}))
    assert run_main([str(spec_path), "--results", str(tmp_path / "results"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert (
        "starts the study over: none of its trials had finished, and scheduler.grace_period "
        "changed (the old one is kept beside it)"
    ) in out
    assert paths.root.is_dir() and not list(paths.root.parent.glob("tiny.old-*"))  # dry: no move


def _terminated(experiment: Path) -> int:
    from study.records.trials import experiment_trials

    return sum(t["status"] == "TERMINATED" for t in experiment_trials(experiment))


@pytest.mark.slow
def test_resume_with_other_resources_runs_only_what_is_unfinished(tmp_path, bench):  # noqa: F811
    spec_path = write_spec(tmp_path, tiny_spec(bench))
    results, root = tmp_path / "results", tmp_path / "results" / "tiny"
    tag = f"preflight-{os.getpid()}-{time.time_ns()}"
    driver = start_study(spec_path, results, tag)
    try:
        # The first arm's search finished and exported; the second arm's is under way, one of
        # its trials finished.
        wait_for(
            lambda: (
                _terminated(root / "ray" / "search-single_level") >= 1 or driver.poll() is not None
            )
        )
        driver.send_signal(signal.SIGINT)
        _, err = driver.communicate(timeout=300)
    finally:
        kill_tagged(tag)
    assert driver.returncode == 130, err[-3000:]
    before = pd.read_parquet(root / "tables" / "trials.parquet")
    finished = before[before["status"].isin(["completed", "early_stopped"])]
    assert len(finished) >= 4, before[["arm", "stage", "status"]]

    rerun = run_study(
        spec_path, results, "--set", "resources.cpus_per_trial=2",
        "--set", "resources.max_concurrent_trials=1",
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "other values" not in rerun.stderr
    # The resumed stage's lines count its trials finished before the interruption too.
    ended = [line for line in rerun.stderr.splitlines()
             if line.startswith("[search single_level] trial ") and " done" in line]  # fmt: skip
    assert ended and "(3/3 done" in ended[-1], ended
    after = pd.read_parquet(root / "tables" / "trials.parquet")
    assert len(after) == 3 + 3 + 2 * 2 and after["trial_id"].is_unique
    kept = after.set_index("trial_id").loc[finished["trial_id"]]
    columns = ["arm", "status", "best_miou", "final_miou", "step_reached", "compute_seconds"]
    pd.testing.assert_frame_equal(kept[columns], finished.set_index("trial_id")[columns])
    for result in (root / "ray").glob("*/*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        ends = [i for i, r in enumerate(rows) if r.get("step") == 6]
        restarts = [i for i, r in enumerate(rows) if i and r["iterations_since_restore"] == 1]
        assert not [i for i in restarts if ends and i > ends[0]], f"{result}: ran again"


# --- the terminal ----------------------------------------------------------------------------
def test_time_left_counts_only_what_still_has_to_run():
    # Resumed: 8 planned, 5 finished in the run before, one running at step 200 of 300.
    assert steps_left(8, 5, {"a": 200}, 300) == 100 + 2 * 300
    # Grown from 3 to 5 samples: the first experiment's 3 finished, 2 new not started yet.
    assert steps_left(5, 3, {}, 300) == 2 * 300
    assert steps_left(5, 3, {"d": 0, "e": 150}, 300) == 300 + 150
    assert steps_left(4, 4, {}, 300) == 0  # nothing left, never negative
    assert time_left_text(600, 10.0) == "about 1 min left"
    assert time_left_text(100, 10.0) == "under a minute left"
    assert time_left_text(0, 10.0) == "" and time_left_text(100, 0.0) == ""


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, monkeypatch) -> None:
        self.now = 1000.0
        monkeypatch.setattr(time, "monotonic", lambda: self.now)


def test_progress_after_a_resume_counts_the_trials_finished_before(capsys, monkeypatch):
    clock = Clock(monkeypatch)
    progress = Progress("search a", planned=8, max_steps=300, every_s=1e9)
    progress.finished_before = 5  # finished in the run before the resume
    restored = SimpleNamespace(trial_id="t6", last_result={"step": 300, "miou": 0.25})
    fresh = SimpleNamespace(trial_id="t7", last_result={})
    # t6 resumes at its checkpoint (step 100: trained in the earlier run, not counted)
    progress.on_trial_result(0, [], restored, {"step": 100, "training_iteration": 3,
                                               "iterations_since_restore": 1})  # fmt: skip
    clock.now += 20
    progress.on_trial_result(0, [], fresh, {"step": 100, "training_iteration": 1,
                                            "iterations_since_restore": 1})  # fmt: skip
    progress.on_trial_result(0, [], restored, {"step": 300, "training_iteration": 5,
                                               "iterations_since_restore": 3})  # fmt: skip
    clock.now += 20
    progress.on_trial_complete(0, [], restored)
    line = capsys.readouterr().err.strip()
    # 100 + 200 steps trained in 40 s; left: t7's 200 and one trial not started (300): 66.7 s.
    assert line == (
        "[search a] trial t6 finished at step 300, select mIoU best 0.2500, final 0.2500 "
        "(6/8 done; about 1 min left in the study)"
    )
    assert progress.seconds_left() == pytest.approx(500 / (300 / 40))


def test_progress_shows_running_trials_every_so_often(capsys, monkeypatch):
    clock = Clock(monkeypatch)
    progress = Progress("confirm", planned=2, max_steps=300, every_s=30)
    trial = SimpleNamespace(trial_id="c1")
    progress.on_trial_result(0, [], trial, {"step": 100})  # fresh: counted from 0
    assert capsys.readouterr().err == ""  # not yet 30 s since the last line
    clock.now += 50
    progress.on_trial_result(0, [], trial, {"step": 200})
    (line,) = capsys.readouterr().err.strip().splitlines()
    # 200 steps in 50 s = 4.0 steps/s; left: c1's 100 and c2's 300 = 100 s.
    assert line == (
        "[confirm] running: c1 step 200/300 (4.0 steps/s); 0/2 done; about 2 min left in the study"
    )


@pytest.mark.parametrize(
    "module",
    [
        "study.run",
        "study.export",
        "adaptseg.train",
        "adaptseg.data.synthetic",
        "reports.build",
        "adaptseg.evaluate",
    ],
)
def test_a_command_line_answers_help_without_importing_torch_or_ray(module):
    check = (
        f"import sys, {module}; heavy = {{'torch', 'ray'}} & set(sys.modules); "
        "print(sorted(heavy)); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    shown = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True
    )
    assert shown.returncode == 0 and "usage:" in shown.stdout


# --- --smoke -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smoke_runs_the_levels_spec_with_every_arm_in_the_report(tmp_path, bench):  # noqa: F811
    env = {
        **ray_env(),
        "GTA5_ROOT": str(bench / "gta5"),
        "CITYSCAPES_ROOT": str(bench / "cityscapes"),
    }
    env.pop("DEEPLAB_INIT", None)  # the small backbone needs no init weights
    results = tmp_path / "results"
    result = subprocess.run(
        study_command(LEVELS, results, "--smoke"), capture_output=True, text=True,
        timeout=900, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    root = results / "levels-smoke"
    trials = pd.read_parquet(root / "tables" / "trials.parquet")
    assert set(trials["arm"]) == LEVELS_ARMS
    confirm = trials[trials["stage"] == "confirm"]
    assert confirm.groupby("arm")["seed"].apply(sorted).to_dict() == {
        arm: [0, 1] for arm in LEVELS_ARMS
    }
    assert (trials["step_reached"] <= 4).all()
    report = (root / "report.html").read_text()
    assert all(arm in report for arm in LEVELS_ARMS)
    # The terminal is quiet: the driver's lines, not Ray's status tables.
    assert "[search source_only] trial" in result.stderr
    assert "Trial status" not in result.stderr + result.stdout
    assert "╭" not in result.stderr + result.stdout
