"""What ``study.ray_internals`` assumes of Ray Tune's and Optuna's private names, of Ray's files
and of its log wording, stated against the installed versions: an upgrade that breaks one fails
here, naming it."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from study_helpers import LOOPBACK, ray_env

from study.ray_internals import api as private_api
from study.ray_internals import logs, snapshot
from study.ray_internals.snapshot import SNAPSHOT, sessions

SPACE = {"lr": FloatDistribution(1e-4, 1e-2, log=True)}


def space(trial: optuna.Trial) -> None:
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)


@pytest.fixture
def storage(tmp_path):
    return optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")


def test_a_trial_row_id_is_what_optunas_storage_takes(storage):
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask(SPACE)
    assert storage.get_trial(private_api.row_id(trial)).number == trial.number
    frozen = study.get_trials(deepcopy=False)[0]
    assert private_api.row_id(frozen) == private_api.row_id(trial)
    wrapped = study._storage  # Study._storage: the storage (wrapped in a cache) the trials use
    assert wrapped.get_trial(private_api.row_id(trial)).number == trial.number, "Study._storage"
    assert hasattr(trial, "_cached_frozen_trial"), "Trial._cached_frozen_trial"


def test_reopen_sets_a_finished_trial_running_keeping_its_intermediate_values(storage):
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    trial = study.ask(SPACE)
    trial.report(0.2, 1)
    study.tell(trial, 0.3)
    row = private_api.row_id(trial)
    assert private_api.reopen(storage, row) is True
    again = storage.get_trial(row)
    assert again.state == TrialState.RUNNING and again.value is None
    assert again.intermediate_values == {1: 0.2} and again.datetime_complete is None
    assert private_api.reopen(storage, row) is False  # already running
    storage.set_trial_state_values(row, TrialState.COMPLETE, [0.4])  # Optuna accepts it again
    assert storage.get_trial(row).value == 0.4


def test_optuna_search_keeps_its_study_and_trials_where_the_subclass_reads_them(storage, tmp_path):
    sampler = optuna.samplers.RandomSampler(seed=0)
    search = private_api.PruneAwareOptunaSearch(
        space, metric="miou", mode="max", storage=storage, study_name="s", max_step=4,
        sampler=sampler,
    )  # fmt: skip
    assert isinstance(search._ot_study, optuna.Study), "OptunaSearch._ot_study"
    assert search._storage is storage and search._study_name == "s"
    assert search._sampler is sampler, "OptunaSearch._sampler"
    assert set(search.suggest("t1")) == {"lr"}  # with a None return, Ray gives the params
    assert isinstance(search._ot_trials["t1"], optuna.Trial), "OptunaSearch._ot_trials"
    search.on_trial_result("t1", {"miou": 0.1, "training_iteration": 1, "step": 2})
    search.on_trial_complete("t1", {"miou": 0.2, "training_iteration": 2, "step": 4})
    assert search._completed_trials == {"t1"}, "OptunaSearch._completed_trials"
    frozen = search._ot_study.trials[0]
    assert frozen.state == TrialState.COMPLETE and frozen.value == 0.2
    assert frozen.user_attrs == {"ray_trial_id": "t1"}
    assert search._ot_study.metric_names == ["miou (select split)"]

    # save() pickles __dict__ and restore() updates __dict__ from it: the subclass's restore
    # finds the trials again, by their Ray trial id.
    search.suggest("t2")
    search.save(str(tmp_path / "searcher.pkl"))
    assert set(pickle.loads((tmp_path / "searcher.pkl").read_bytes())) >= {
        "_ot_trials", "_ot_study", "_completed_trials", "_storage", "_study_name", "_sampler",
    }  # fmt: skip
    restored = private_api.PruneAwareOptunaSearch(
        space, metric="miou", mode="max", storage=storage, study_name="s", max_step=4,
        sampler=sampler,
    )  # fmt: skip
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert set(restored._ot_trials) == {"t1", "t2"} and restored._completed_trials == {"t1"}
    restored.on_trial_complete("t2", {"miou": 0.1, "training_iteration": 1, "step": 2})
    states = [t.state for t in restored._ot_study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED]  # stopped before its last step


TUNE_RUN = """
import ray, tempfile, os
from ray import tune

def trainable(config):
    for step in range(3):
        with tempfile.TemporaryDirectory() as folder:
            open(os.path.join(folder, "x"), "w").write(str(step))
            tune.report({"step": step}, checkpoint=tune.Checkpoint.from_directory(folder))

ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address=%r)
tune.Tuner(trainable, run_config=tune.RunConfig(
    name="e", storage_path=%r, checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
    verbose=0)).fit()
ray.shutdown()
"""


@pytest.mark.slow
def test_ray_pickles_each_trials_checkpoint_manager_into_its_snapshot(tmp_path):
    script = textwrap.dedent(TUNE_RUN % (LOOPBACK, str(tmp_path)))
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
        env=ray_env(), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    experiment = tmp_path / "e"
    state = json.loads((experiment / SNAPSHOT.format(sessions(experiment)[0])).read_text())
    ((trial_json, runtime_json),) = state["trial_data"]
    runtime = json.loads(runtime_json)
    manager = snapshot.checkpoint_manager(runtime)
    assert manager is not None, "runtime['checkpoint_manager'] is no CLOUDPICKLE_FALLBACK blob"
    folder = json.loads(trial_json)["relative_logdir"]
    newest = experiment / folder / "checkpoint_000002"
    assert snapshot.resume_path(manager) == str(newest), "_latest_checkpoint_result"
    assert [r.checkpoint.path for r in manager._checkpoint_results] == [
        str(experiment / folder / "checkpoint_000001"),
        str(newest),
    ], "_checkpoint_results"

    snapshot.point_at(manager, experiment / folder / "checkpoint_000001")
    snapshot.store_checkpoint_manager(runtime, manager)
    again = snapshot.checkpoint_manager(runtime)
    assert snapshot.resume_path(again) == str(experiment / folder / "checkpoint_000001")
    snapshot.point_at(again, None)
    assert snapshot.resume_path(again) is None

    runner = state["runner_data"]
    for key in snapshot.PENDING_DECISIONS:
        assert runner.get(key) == {}, f"runner_data[{key!r}]: Ray's pending trial decisions"
    runner["_cached_trial_decisions"] = {"t": "STOP"}
    assert snapshot.drop_pending_decisions(runner) == {"t": "STOP"}
    assert all(runner[key] == {} for key in snapshot.PENDING_DECISIONS)


def test_tunes_asha_keeps_its_rungs_where_the_ask_order_subclass_reads_them():
    """AskOrderASHA replaces ASHA's bracket by one that compares only earlier-asked trials."""
    from ray.tune.schedulers.async_hyperband import _Bracket

    asha = private_api.AskOrderASHA(
        time_attr="step", metric="miou", mode="max", max_t=18, grace_period=2,
        reduction_factor=3, slots=2,
    )  # fmt: skip
    (bracket,) = asha._brackets
    assert isinstance(bracket, _Bracket), "_Bracket, _brackets"
    assert [milestone for milestone, _ in bracket._rungs] == [18, 6, 2], "_rungs (reversed)"
    assert bracket._stop_last_trials is True, "_stop_last_trials"


def test_an_iteration_reported_again_after_a_resume_keeps_its_first_value_quietly(storage):
    """A trial resumed from an older checkpoint reports an iteration again: Optuna keeps the
    first value, and its warning about it does not reach the user's terminal."""
    import warnings

    search = private_api.PruneAwareOptunaSearch(
        space, metric="miou", mode="max", storage=storage, study_name="s", max_step=4
    )
    search.suggest("a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        search.on_trial_result("a", {"miou": 0.2, "training_iteration": 2, "step": 2})
        search.on_trial_result("a", {"miou": 0.3, "training_iteration": 2, "step": 2})
    (trial,) = optuna.load_study(study_name="s", storage=storage).trials
    assert trial.intermediate_values == {2: 0.2}


RESTORE_RUN = """
import os, sys, ray
from ray import tune
from study.ray_internals.api import use_callbacks

class Mark(tune.Callback):
    def __init__(self, name):
        self.name = name

    def setup(self, **info):
        open(os.path.join(%r, self.name), "w").write("called")

def trainable(config):
    tune.report({"step": 1})

ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address=%r)
if sys.argv[1] == "first":
    tune.Tuner(trainable, run_config=tune.RunConfig(name="e", storage_path=%r,
               callbacks=[Mark("first")], verbose=0)).fit()
else:
    tuner = tune.Tuner.restore(os.path.join(%r, "e"), trainable=trainable)
    use_callbacks(tuner, [Mark("second")])
    tuner.fit()
ray.shutdown()
"""


@pytest.mark.slow
def test_a_restored_tuner_runs_the_callbacks_given_not_its_pickled_ones(tmp_path):
    script = textwrap.dedent(RESTORE_RUN % (str(tmp_path), LOOPBACK, str(tmp_path), str(tmp_path)))
    for run in ("first", "second"):
        done = subprocess.run(
            [sys.executable, "-c", script, run], capture_output=True, text=True, timeout=300,
            env=ray_env(), cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        if run == "first":
            assert (tmp_path / "first").is_file(), "Callback.setup is called when a fit starts"
            (tmp_path / "first").unlink()
    assert (tmp_path / "second").is_file(), "Tuner._local_tuner.get_run_config().callbacks"
    assert not (tmp_path / "first").exists(), "the pickled callbacks still ran"


def test_the_log_wording_the_filters_match_is_rays():
    """``logs.TRIAL_TASK_FAILED`` and ``logs.RESUME_HINT`` are what Ray Tune logs (its source)."""
    import inspect

    from ray.tune import tune as tune_module
    from ray.tune.execution import tune_controller

    assert logs.TRIAL_TASK_FAILED in inspect.getsource(tune_controller), "Trial task failed"
    assert logs.RESUME_HINT in inspect.getsource(tune_module), "Tuner.restore( hint"
