"""Bringing Optuna's records in line with Ray's (no Ray needed: both records made by hand)."""

from __future__ import annotations

import json

import optuna
import pytest
from fabricate import _write_experiment
from optuna.trial import TrialState
from study_helpers import tiny_spec

from study.ray_internals.snapshot import repair_snapshots, session_problem, sessions
from study.records import optuna_db
from study.records.folder import StudyPaths
from study.records.rows import RAY_TRIAL_ATTR
from study.spec.schema import StudySpec


def rows(steps, mious, **extra):
    """Reports of a search trial (6 steps in ``tiny_spec``)."""
    return [{"step": s, "split": "select", "miou": m, "training_iteration": i + 1,
             "iterations_since_restore": i + 1, "status": "ok", **extra}
            for i, (s, m) in enumerate(zip(steps, mious))]  # fmt: skip


def test_the_optuna_database_is_rebuilt_to_hold_exactly_what_ray_records(tmp_path):
    """A database that lags Ray's records (a kill -9 between the two writes, trials asked after
    Ray's last snapshot) is rebuilt from them: one Optuna trial per Ray trial, in the state
    the tables give it; trials no Ray trial stands for are gone, not marked."""
    spec = StudySpec.model_validate(tiny_spec(tmp_path / "bench"))
    paths = StudyPaths(tmp_path)
    experiment = tmp_path / "ray" / "search-source_only"
    config = {"arm": "source_only", "stage": "search"}
    _write_experiment(experiment, [
        ("done", {**config, "lr": 1e-3}, "TERMINATED", rows([2, 6], [0.1, 0.3])),  # completed
        ("cut", {**config, "lr": 6e-4}, "TERMINATED", rows([2], [0.2])),  # early_stopped
        ("live", {**config, "lr": 7e-4}, "RUNNING", rows([2], [0.2])),  # running
        ("bad", {**config, "lr": 9e-4}, "TERMINATED",
         rows([2], [float("nan")], status="diverged")),
    ])  # fmt: skip
    study = optuna.create_study(
        study_name="tiny-source_only", storage=paths.optuna_url, direction="maximize"
    )
    for ray_id, state in [("done", None), ("cut", TrialState.COMPLETE), ("live", TrialState.PRUNED),
                          ("bad", None), ("gone", TrialState.COMPLETE), ("asked", None)]:  # fmt: skip
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(5e-4, 2e-3, log=True)})
        trial.set_user_attr(RAY_TRIAL_ATTR, ray_id)
        if state is not None:
            study.tell(trial, 0.9 if state == TrialState.COMPLETE else None, state=state)
    study.ask()  # asked before it could carry its Ray id, then the run was killed
    assert optuna_db.problem(paths, spec) == (
        "its study tiny-source_only holds a trial no Ray trial stands for",
        False,
    )

    assert optuna_db.ensure(paths, spec) is None  # lagging, not damaged: no line for the user
    trials = optuna.load_study(study_name="tiny-source_only", storage=paths.optuna_url).trials
    found = {t.user_attrs[RAY_TRIAL_ATTR]: t for t in trials}
    assert {ray_id: t.state for ray_id, t in found.items()} == {
        "done": TrialState.COMPLETE, "cut": TrialState.PRUNED, "live": TrialState.RUNNING,
        "bad": TrialState.FAIL,
    }  # fmt: skip
    assert found["done"].value == 0.3 and found["done"].params == {"lr": 1e-3}
    # every select report, the last included, at its training step
    assert found["done"].intermediate_values == {2: 0.1, 6: 0.3}
    assert found["cut"].intermediate_values == {2: 0.2}
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert not list(tmp_path.glob("optuna.db.damaged-*"))
    assert optuna_db.problem(paths, spec) is None


def test_a_damaged_optuna_database_is_kept_aside_and_the_user_told(tmp_path):
    spec = StudySpec.model_validate(tiny_spec(tmp_path / "bench"))
    paths = StudyPaths(tmp_path)
    _write_experiment(tmp_path / "ray" / "search-single_level", [
        ("t1", {"arm": "single_level", "lr": 1e-3, "lambda_adv_main": 2e-3}, "TERMINATED",
         rows([2, 6], [0.1, 0.3])),
    ])  # fmt: skip
    assert optuna_db.ensure(paths, spec).endswith("it is missing; rebuilt it from Ray's records: "
                                                   "1 trials, the search history TPE and the "
                                                   "dashboard use")  # fmt: skip
    paths.optuna_db.write_bytes(b"garbage" * 100)
    line = optuna_db.ensure(paths, spec)
    assert "it cannot be read (" in line and line.endswith("as optuna.db.damaged-*)")
    assert [p.read_bytes() for p in tmp_path.glob("optuna.db.damaged-*")] == [b"garbage" * 100]
    trial = optuna.load_study(study_name="tiny-single_level", storage=paths.optuna_url).trials[0]
    assert trial.params == {"lr": 1e-3, "lambda_adv_main": 2e-3} and trial.value == 0.3


def snapshot(experiment, session, trials: int, counter: int, text: str | None = None):
    import pickle

    experiment.mkdir(parents=True, exist_ok=True)
    body = text if text is not None else json.dumps({"trial_data": [["{}", "{}"]] * trials})
    (experiment / f"experiment_state-{session}.json").write_text(body)
    (experiment / f"search_gen_state-{session}.json").write_bytes(
        pickle.dumps({"counter": counter})
    )
    (experiment / f"searcher-state-{session}.pkl").write_bytes(b"x")


@pytest.mark.parametrize(
    ("newest", "problem"),
    [({"trials": 3, "counter": 3}, None),
     ({"trials": 3, "counter": 3, "text": '{"trial_data": [['}, "cut off"),
     ({"trials": 4, "counter": 3}, "holds 4 trials where its search generator counted 3"),
     ({"trials": 2, "counter": 3}, "holds 2 trials where its search generator counted 3")],
)  # fmt: skip
def test_a_snapshot_left_half_written_by_a_kill_is_set_aside(tmp_path, newest, problem):
    experiment = tmp_path / "search-a"
    snapshot(experiment, "2026-01-01_00-00-01", trials=2, counter=2)
    snapshot(experiment, "2026-01-01_00-00-02", **newest)
    found = session_problem(experiment, "2026-01-01_00-00-02")
    assert (found is None) == (problem is None) and (problem is None or problem in found)
    moved = repair_snapshots(experiment)
    assert moved == ([] if problem is None else ["2026-01-01_00-00-02"])
    assert sessions(experiment)[0] == (
        "2026-01-01_00-00-02" if problem is None else "2026-01-01_00-00-01"
    )
    if problem:
        assert (experiment / ".discarded" / "2026-01-01_00-00-02").is_dir()


def test_a_snapshot_naming_a_deleted_checkpoint_is_pointed_at_the_newest_one(tmp_path):
    import ray.cloudpickle as cloudpickle
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult
    from ray.tune import Checkpoint, CheckpointConfig

    from study.ray_internals.snapshot import Restore, prepare_restore

    experiment = tmp_path / "confirm"
    folders = {}
    for trial_id, kept in (("gone", (3, 5)), ("fine", (4,)), ("none", ())):
        folder = experiment / f"train_trial_{trial_id}"
        for index in kept:
            (folder / f"checkpoint_{index:06d}").mkdir(parents=True)
            (folder / f"checkpoint_{index:06d}" / "trainer.pt").write_bytes(b"x")
        folder.mkdir(parents=True, exist_ok=True)
        folders[trial_id] = folder
    data = []
    for trial_id, named in (("gone", 4), ("fine", 4), ("none", 2)):
        manager = _CheckpointManager(CheckpointConfig(num_to_keep=2))
        path = folders[trial_id] / f"checkpoint_{named:06d}"
        manager.register_checkpoint(_TrainingResult(Checkpoint(str(path)), {"step": named}))
        runtime = {"checkpoint_manager": {"_type": "CLOUDPICKLE_FALLBACK",
                                          "value": cloudpickle.dumps(manager).hex()}}  # fmt: skip
        trial = {"trial_id": trial_id, "relative_logdir": folders[trial_id].name}
        data.append([json.dumps(trial), json.dumps(runtime)])
    snapshot = experiment / "experiment_state-2026-01-01_00-00-00.json"
    snapshot.write_text(json.dumps({"trial_data": data}))
    assert prepare_restore(experiment, True, "trainer.pt").repointed == ("gone", "none")
    latest = {}
    for trial_json, runtime_json in json.loads(snapshot.read_text())["trial_data"]:
        blob = json.loads(runtime_json)["checkpoint_manager"]["value"]
        result = cloudpickle.loads(bytes.fromhex(blob))._latest_checkpoint_result
        latest[json.loads(trial_json)["trial_id"]] = result and result.checkpoint.path
    assert latest["gone"].endswith("checkpoint_000005")
    assert latest["fine"].endswith("checkpoint_000004") and latest["none"] is None
    assert prepare_restore(experiment, True, "trainer.pt") == Restore(True)


def test_decisions_a_killed_run_held_for_trials_in_flight_are_dropped(tmp_path):
    from study.ray_internals.snapshot import Restore, prepare_restore

    experiment = tmp_path / "search-a"
    experiment.mkdir()
    older = experiment / "experiment_state-2026-01-01_00-00-00.json"
    newest = experiment / "experiment_state-2026-01-01_00-00-01.json"
    held = {"_cached_trial_decisions": {"t1": "STOP"}, "_queued_trial_decisions": {"t2": "PAUSE"}}
    for path in (older, newest):
        path.write_text(json.dumps({"trial_data": [], "runner_data": {**held, "_iteration": 7}}))
    restore = prepare_restore(experiment, True, "trainer.pt")
    assert restore.dropped == {"t1": "STOP", "t2": "PAUSE"} and restore.rewritten == newest.name
    runner = json.loads(newest.read_text())["runner_data"]
    assert runner == {
        "_cached_trial_decisions": {},
        "_queued_trial_decisions": {},
        "_iteration": 7,
    }
    assert json.loads(older.read_text())["runner_data"]["_cached_trial_decisions"] == {
        "t1": "STOP"
    }
    stamp = newest.stat().st_mtime_ns
    assert prepare_restore(experiment, True, "trainer.pt") == Restore(True)
    assert newest.stat().st_mtime_ns == stamp  # nothing held: the snapshot is left as it is
    assert prepare_restore(tmp_path / "none", True, "trainer.pt") == Restore(False)
