"""The MLflow tracker (``study.stages.trackers`` says what it adds to Ray Tune's callback). A
module of its own, loaded only for a study whose spec asks for MLflow (MLflow's import takes
seconds); a module-level class, because Ray pickles a run's callbacks with the experiment."""

from __future__ import annotations

import os
import time
from typing import Any

# MLflow 3 sends usage telemetry to the internet by default, from a background thread; a study
# followed in a local store stays offline unless the user asks (MLFLOW_DISABLE_TELEMETRY=false).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from ray.air.integrations.mlflow import MLflowLoggerCallback  # noqa: E402

from study.stages.trackers import identity, metrics_of, recorded_rows, sampled


class MLflowTracker(MLflowLoggerCallback):
    """One MLflow run per trial in the study's experiment, each step once."""

    def __init__(
        self, tracking_uri: str, experiment: str, study: str, code_version: str,
        searched: set[str],
    ) -> None:  # fmt: skip
        super().__init__(tracking_uri=tracking_uri, experiment_name=experiment,
                         tags={"study": study, "code_version": code_version})  # fmt: skip
        self.searched = set(searched)

    def setup(self, *args: Any, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        super().setup(*args, **kwargs)  # Ray's: the tracking URI set, the experiment made
        self.client = MlflowClient(self.tracking_uri)
        self.experiment_id = self.client.get_experiment_by_name(self.experiment_name).experiment_id
        self.runs: dict[str, str] = {}
        self.logged: dict[str, set[tuple[str, int]]] = {}

    def log_trial_start(self, trial: Any) -> None:
        if trial.trial_id in self.runs:
            return
        found = self.client.search_runs(
            [self.experiment_id], f"tags.ray_trial_id = '{trial.trial_id}'", max_results=2
        )
        if found:  # the trial resumes: its run goes on
            run_id = found[0].info.run_id
            logged = {(key, point.step) for key in found[0].data.metrics
                      for point in self.client.get_metric_history(run_id, key)}  # fmt: skip
            self.client.update_run(run_id, status="RUNNING")
        else:
            from mlflow.entities import Param

            tags = {**self.tags, **identity(trial)}
            name = f"{tags['stage']}-{tags['arm']}-{trial.trial_id}"
            run_id = self.client.create_run(self.experiment_id, run_name=name,
                                            tags=tags).info.run_id  # fmt: skip
            params = [Param(k, v) for k, v in sampled(trial, self.searched).items()]
            self.client.log_batch(run_id, params=params)
            logged = set()
        self.runs[trial.trial_id], self.logged[trial.trial_id] = run_id, logged
        for row in recorded_rows(trial):  # what the tracker missed (a kill -9 between)
            self._log(trial, row)

    def _log(self, trial: Any, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step = row.get("step")
        if not isinstance(step, int):
            return
        logged, now = self.logged[trial.trial_id], int(time.time() * 1000)
        points = [Metric(name, value, now, step) for name, value in metrics_of(row).items()
                  if (name, step) not in logged]  # fmt: skip
        if points:
            self.client.log_batch(self.runs[trial.trial_id], metrics=points)
            logged.update((point.key, step) for point in points)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        self.log_trial_start(trial)
        self._log(trial, result)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        run_id = self.runs.pop(trial.trial_id, None)
        if run_id is not None:
            self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
