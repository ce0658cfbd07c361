"""TensorBoard and MLflow follow a study through Ray Tune's callbacks: one run per trial with
the study's tags, every training step once, also after kill -9 of the driver and a rerun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from study_helpers import (
    kill_tagged,
    run_study,
    start_study,
    tiny_spec,
    wait_for,
    write_spec,
)
from test_study import bench  # noqa: F401  (the shared synthetic benchmark fixture)

from study.run import main as run_main

TRACKED = {"tensorboard": True, "mlflow": {}}


def mlflow_runs(root: Path) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=[root.name])


def logged_points(root: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def resumable_with_steps(root: Path, arm: str) -> bool:
    """A trial of ``arm`` whose MLflow run is running with logged steps, and which Ray's newest
    snapshot records as running (so a rerun resumes it): read while the driver runs."""
    from study.records.trials import experiment_trials

    if not (root / "mlflow.db").is_file():
        return False
    try:
        runs = mlflow_runs(root)
    except Exception:  # noqa: BLE001 - the store being made: look again
        return False
    if runs.empty or "metrics.select_miou" not in runs:
        return False
    mine = runs[(runs["tags.arm"] == arm) & (runs["status"] == "RUNNING")]
    # Early in its 40 steps: the kill lands inside the trial, not at its end.
    logged = {run["tags.ray_trial_id"] for _, run in mine.iterrows()
              if 0 < max((s for s, _ in logged_points(root, run["run_id"], "select_miou")),
                         default=0) <= 10}  # fmt: skip
    snapshot = experiment_trials(root / "ray" / f"search-{arm}")
    return any(t["trial_id"] in logged and t["status"] == "RUNNING" for t in snapshot)


def check_trackers(root: Path) -> None:
    """One run per trial, tagged; each (metric, step) once; the same numbers as the tables."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trials = pd.read_parquet(root / "tables" / "trials.parquet")
    evals = pd.read_parquet(root / "tables" / "evals.parquet")
    runs = mlflow_runs(root)
    assert sorted(runs["tags.ray_trial_id"]) == sorted(trials["trial_id"]), "one run per trial"
    for trial in trials.itertuples():
        (index,) = runs.index[runs["tags.ray_trial_id"] == trial.trial_id]
        run = runs.loc[index]
        assert run["tags.arm"] == trial.arm and run["tags.stage"] == trial.stage
        select = evals[(evals["trial_id"] == trial.trial_id) & (evals["split"] == "select")
                       & evals["miou"].notna()]  # fmt: skip
        expected = sorted(zip(select["step"].astype(int), select["miou"], strict=True))
        points = logged_points(root, run["run_id"], "select_miou")
        steps = [step for step, _ in points]
        assert len(steps) == len(set(steps)), f"{trial.trial_id}: a step logged twice"
        assert points == pytest.approx(expected), trial.trial_id
        folder = root / "tensorboard" / f"{trial.stage}-{trial.arm}" / trial.trial_id
        accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        accumulator.Reload()
        board = [(e.step, e.value) for e in accumulator.Scalars("select_miou")]
        assert Counter(s for s, _ in board) == Counter(s for s, _ in expected), "TensorBoard"
    seeds = runs[runs["tags.stage"] == "confirm"]["tags.seed"]
    assert sorted(seeds.astype(int)) == sorted(trials[trials["stage"] == "confirm"]["seed"])


@pytest.mark.slow
def test_a_tracked_study_has_one_run_per_trial_with_the_tables_numbers(tmp_path, bench):  # noqa: F811
    spec_path = write_spec(tmp_path, tiny_spec(bench, trackers=TRACKED))
    result = run_study(spec_path, tmp_path / "results")
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "results" / "tiny"
    check_trackers(root)
    assert f"mlflow ui --backend-store-uri sqlite:///{root / 'mlflow.db'}" in result.stdout
    assert f"tensorboard --logdir {root / 'tensorboard'}" in result.stdout
    runs = mlflow_runs(root)
    search = runs[runs["tags.stage"] == "search"]
    assert search["params.lr"].notna().all(), "the sampled config as params"
    assert runs["tags.code_version"].notna().all()


@pytest.mark.slow
@pytest.mark.faults
def test_after_kill_9_of_the_driver_each_trial_keeps_one_run_and_each_step_once(tmp_path, bench):  # noqa: F811
    spec = tiny_spec(bench, trackers=TRACKED,
                     train={"num_steps": 40, "schedule_steps": 40, "eval_every": 2},
                     search={"num_samples": 2})  # fmt: skip
    spec_path = write_spec(tmp_path, spec)
    results, root = tmp_path / "results", tmp_path / "results" / "tiny"
    tag = f"trackers-{os.getpid()}-{time.time_ns()}"
    driver = start_study(spec_path, results, tag)
    try:
        # The second arm's search under way: a run opened and steps logged for a trial Ray's
        # snapshot will resume, then kill -9.
        wait_for(lambda: driver.poll() is not None or resumable_with_steps(root, "single_level"))
        assert driver.poll() is None, driver.communicate()[1][-3000:]
    finally:
        kill_tagged(tag)
    assert driver.wait(timeout=60) == -9, "the driver was not killed"
    rerun = run_study(spec_path, results)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = [path for path in (root / "ray" / "search-single_level").glob("*/result.json")
               if any(json.loads(line)["iterations_since_restore"] == 1
                      for line in path.read_text().splitlines()[1:])]  # fmt: skip
    assert resumed, "no trial was resumed: the kill landed outside a trial"
    check_trackers(root)


def test_a_tracker_whose_package_is_missing_is_refused_naming_the_extra(
    tmp_path, capsys, monkeypatch
):
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else found(name, *a)
    )
    spec_path = write_spec(tmp_path, tiny_spec(tmp_path / "bench", trackers={"mlflow": {}}))
    assert run_main([str(spec_path), "--results", str(tmp_path / "r"), "--dry-run"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"error: {spec_path}: trackers.mlflow: the mlflow package is not installed; "
        'pip install -e ".[mlflow]"'
    )
    assert not (tmp_path / "r").exists()


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.commands
def test_mlflow_ui_on_loopback_shows_the_studys_experiment(tmp_path):
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    mlflow.create_experiment("tiny")
    port = free_port("127.0.0.1")
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_cli), "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
               "--port", str(port)]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)  # fmt: skip
    try:
        url = (
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=tiny"
        )
        deadline, answer = time.time() + 120, None
        while time.time() < deadline and answer is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    answer = response.read().decode()
            except OSError:
                assert server.poll() is None, server.stderr.read()[-2000:]
                time.sleep(1)
        assert answer is not None and '"name": "tiny"' in answer.replace('":"', '": "')
    finally:
        os.killpg(server.pid, 9)
        server.wait(timeout=30)


@pytest.mark.parametrize("given, expected", [(None, "true"), ("false", "false")])
def test_the_mlflow_tracker_keeps_a_study_offline_unless_the_user_says(given, expected):
    """MLflow 3 sends usage telemetry to the internet by default: loading the tracker turns it
    off, and a value the user set is kept."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}
    if given is not None:
        env["MLFLOW_DISABLE_TELEMETRY"] = given
    code = ("import os, study.stages.mlflow_tracker; "
            "print(os.environ['MLFLOW_DISABLE_TELEMETRY'])")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == expected
