"""kill -9 of the driver's process group during the search, between the stages and during the
confirm stage; each time the same command is run again. Nothing may be lost or done twice,
and the confirm results must equal those of an uninterrupted run (one trial at a time, no
ASHA, deterministic mode: otherwise which trials stop depends on timing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from study_helpers import kill_tagged, run_study, start_study, tiny_spec, wait_for, write_spec
from test_study import bench  # noqa: F401  (the shared synthetic benchmark fixture)

STEPS = 24


def chaos_spec(benchmark: Path) -> dict:
    return tiny_spec(
        benchmark,
        train={
            "num_steps": STEPS,
            "schedule_steps": STEPS,
            "eval_every": 4,
            "deterministic": True,
        },
        search={"num_samples": 2, "sampler": {"kind": "tpe", "seed": 0, "n_startup_trials": 1}},
        scheduler={"kind": "none"},
        confirm={"top_k": 1, "seeds": [0, 1]},
        resources={"cpus_per_trial": 1, "max_concurrent_trials": 1},
    )


def kill_hard(driver: subprocess.Popen, tag: str) -> None:
    """SIGKILL the driver's process group, then every process carrying its tag (Ray's workers
    sit in their own process groups and would run on for a minute)."""
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    kill_tagged(tag)


def _last_step(result: Path) -> int:
    try:
        lines = result.read_text().splitlines()
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except (OSError, ValueError, KeyError):
        return 0


def resumable_inside_a_trial(root: Path, experiment_glob: str) -> bool:
    """True once a kill -9 is sure to land inside a trial that resumes past its first
    checkpoint: Ray's newest experiment snapshot records a running trial whose checkpoint to
    resume from is its second or later (step 8 or later; Ray resumes from the snapshot's
    checkpoint manager, not from what the trial folder holds, and the manager can lag the last
    result), and the trial has not reached its last step. Progress, not time."""
    from study_helpers import resume_checkpoints

    for experiment in (root / "ray").glob(experiment_glob):
        snapshots = sorted(experiment.glob("experiment_state-*.json"))
        if not snapshots:
            continue
        try:
            trials = json.loads(snapshots[-1].read_text())["trial_data"]
            resume = resume_checkpoints(experiment)
        except (OSError, ValueError, KeyError, EOFError):
            continue  # being written: look again
        for entry in trials:
            trial = json.loads(entry[0])
            checkpoint = resume.get(trial["trial_id"])
            if trial.get("status") != "RUNNING" or checkpoint is None:
                continue
            folder = experiment / trial.get("relative_logdir", "")
            if (
                Path(checkpoint).name >= "checkpoint_000001"
                and _last_step(folder / "result.json") < STEPS
            ):
                return True
    return False


@pytest.mark.slow
@pytest.mark.faults
def test_kill_9_three_times_loses_nothing_and_changes_nothing(tmp_path, bench):  # noqa: F811
    reference_dir, chaos_dir = tmp_path / "reference", tmp_path / "chaos"
    for folder in (reference_dir, chaos_dir):
        folder.mkdir()
        write_spec(folder, chaos_spec(bench))
    reference = run_study(reference_dir / "study.yaml", reference_dir / "results")
    assert reference.returncode == 0, reference.stderr[-3000:]

    root = chaos_dir / "results" / "tiny"
    moments = [
        lambda: resumable_inside_a_trial(root, "search-source_only"),
        lambda: (root / "confirm_plan.json").exists(),
        lambda: resumable_inside_a_trial(root, "confirm*"),
    ]
    kills = 0
    for index, moment in enumerate(moments):
        tag = f"chaos-deterministic-{os.getpid()}-{index}"
        driver = start_study(
            chaos_dir / "study.yaml", chaos_dir / "results", tag, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            wait_for(lambda m=moment, d=driver: m() or d.poll() is not None, what="the kill")
        finally:
            if driver.poll() is None:
                kill_hard(driver, tag)
                kills += 1
    assert kills == 3, "the study finished before a kill"
    final = run_study(chaos_dir / "study.yaml", chaos_dir / "results")
    assert final.returncode == 0, final.stderr[-3000:]

    trials = pd.read_parquet(root / "tables" / "trials.parquet")
    assert len(trials) == 2 * 2 + 2 * 2 and trials["trial_id"].is_unique
    assert (trials["status"] == "completed").all(), trials[["arm", "stage", "status"]]
    evals = pd.read_parquet(root / "tables" / "evals.parquet")
    assert not evals.duplicated(["trial_id", "step", "split", "model"]).any()
    resumed_at = []
    for result in (root / "ray").glob("*/*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        finished = [i for i, r in enumerate(rows) if r["step"] == STEPS]
        restarts = [i for i, r in enumerate(rows) if i and r["iterations_since_restore"] == 1]
        assert not [i for i in restarts if finished and i > finished[0]], (
            "a finished trial ran again"
        )
        resumed_at += [rows[i]["step"] for i in restarts]
    # Killed past a checkpoint at step 8 or later: the first step redone after it is 12 or more.
    assert resumed_at and min(resumed_at) >= 12, f"resumed at steps {resumed_at}"

    def confirm(directory: Path) -> dict:
        table = pd.read_parquet(directory / "tables" / "trials.parquet")
        rows = table[table["stage"] == "confirm"]
        return {(r.arm, r.seed): r.report_miou_best_on_select for r in rows.itertuples()}

    assert confirm(root) == confirm(reference_dir / "results" / "tiny")
