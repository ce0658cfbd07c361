"""One Ray Tune experiment of a stage: fit anew, or restored where an earlier run left it.

Every experiment of a study runs the same trainable (``study.stages.trainable``) with the
spec's resources, and the same callbacks: the terminal's lines (``Progress``), the trials Tune
gave up on (``ErroredTrials``), the live report (``LiveReport``) and the disk watch
(``DiskWatch``). A restored experiment gets this run's callbacks, not the copies Ray pickled
when the experiment was first made (``ray_internals.api.use_callbacks``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray import tune

from study.errors import Interrupted
from study.ray_internals.api import use_callbacks
from study.ray_internals.snapshot import prepare_restore
from study.records.folder import StudyPaths
from study.records.outcomes import ErroredTrials, effective_status, load_errored
from study.spec.schema import StudySpec
from study.stages.diskspace import DiskWatch
from study.stages.provenance import code_version
from study.stages.selection import TrialRecord
from study.stages.terminal import Progress
from study.stages.trackers import TensorBoardTracker
from study.stages.trainable import CHECKPOINT_FILE, train_trial
from study.tables.live import LiveReport

FINISHED = {"TERMINATED", "ERROR"}


@dataclass(frozen=True)
class Session:
    """What every experiment of one run of the study shares."""

    spec: StudySpec
    paths: StudyPaths
    gpus: float
    slots: int  # trials at once (study.stages.preflight.trial_slots)
    verbose: bool
    watch: DiskWatch

    def trainable(self) -> Any:
        resources = {"cpu": self.spec.resources.cpus_per_trial, "gpu": self.gpus}
        trainable = tune.with_parameters(train_trial, spec=self.spec.dump())
        return tune.with_resources(trainable, resources)

    def callbacks(self, name: str, progress: Progress) -> list[tune.Callback]:
        return [
            ErroredTrials(self.paths.errors_file, name),
            progress,
            LiveReport(self.paths, name, progress, sync_every_s=self.spec.checkpoint.sync_every_s),
            self.watch,
            *self.trackers(),
        ]

    def trackers(self) -> list[tune.Callback]:
        """The trackers the spec asks for (``study.stages.trackers``)."""
        trackers = self.spec.trackers
        out: list[tune.Callback] = []
        if trackers.tensorboard:
            out.append(TensorBoardTracker(self.paths.tensorboard))
        if trackers.mlflow is not None:
            from study.stages.mlflow_tracker import MLflowTracker  # MLflow loads only here

            out.append(
                MLflowTracker(
                    trackers.mlflow.tracking_uri or self.paths.mlflow_url,
                    trackers.mlflow.experiment or self.spec.name,
                    self.spec.name,
                    code_version(),
                    set(self.spec.search.space),
                )
            )
        return out

    def run_config(self, name: str, progress: Progress) -> tune.RunConfig:
        """Ray Tune's own status tables only with ``--verbose``: the driver's lines say it all."""
        checkpoint = self.spec.checkpoint
        return tune.RunConfig(
            name=name,
            storage_path=self.paths.experiments,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=checkpoint.num_to_keep),
            sync_config=tune.SyncConfig(sync_period=checkpoint.sync_every_s),
            failure_config=tune.FailureConfig(max_failures=self.spec.max_failures),
            callbacks=self.callbacks(name, progress),
            verbose=2 if self.verbose else 0,
        )


def trial_records(grid: tune.ResultGrid) -> list[TrialRecord]:
    """A Ray result grid as plain records (the only place selection meets Ray's types)."""
    records = []
    for result in grid:
        history = result.metrics_dataframe
        rows = history.to_dict("records") if history is not None else []
        trial_id = (result.metrics or {}).get("trial_id", "")
        records.append(TrialRecord(trial_id, result.config or {}, rows, result.error is not None))
    return records


def fit_or_restore(
    session: Session, name: str, progress: Progress, make_tuner: Callable[[], tune.Tuner]
) -> list[TrialRecord]:
    """Fit a new experiment, or restore an existing one (unfinished and errored trials go on).

    Raises:
        Interrupted: the run stopped before every trial of the experiment finished.
    """
    paths = session.paths
    path = paths.experiment(name)
    restore = None
    if tune.Tuner.can_restore(path):
        restore = prepare_restore(paths.records_dir / name, not paths.remote, CHECKPOINT_FILE)
        if restore.rewritten and paths.remote:
            paths.upload(name, restore.rewritten)
    if restore is not None and restore.restorable:
        tuner = tune.Tuner.restore(
            path, trainable=session.trainable(), resume_unfinished=True, resume_errored=True
        )
        use_callbacks(tuner, session.callbacks(name, progress))
    else:
        tuner = make_tuner()
    grid = tuner.fit()
    errored = load_errored(paths.errors_file).get(name, {})
    statuses = [
        effective_status(t.status, t.trial_id, errored)
        for t in tune.ExperimentAnalysis(path).trials
    ]
    if any(status not in FINISHED for status in statuses):
        raise Interrupted(path)
    return trial_records(grid)
