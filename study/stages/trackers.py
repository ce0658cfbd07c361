"""Follow a study where researchers already look: TensorBoard and MLflow, through Ray Tune's own
logger callbacks, exact after any fault.

Ray's ``TBXLoggerCallback`` and ``MLflowLoggerCallback`` give the lifecycle (a trial starts,
reports, ends) and MLflow's experiment set-up. What they do not do, and these subclasses add:

* **one run per trial, whatever happened**: Ray's MLflow callback opens a new run each time a
  trial starts, so a trial resumed after a kill or a Ctrl-C gets a second run (ray#48664);
  here a trial's run is found again by its Ray trial id (a tag), and its TensorBoard folder is
  the same folder;
* **each training step once**: Ray logs at its report count (``training_iteration``), and a
  trial resumed from its checkpoint reports the steps since then again; here the step is the
  training step, and a (metric, step) already in the tracker is never logged again (read back
  from MLflow's store or the folder's event files when the trial starts);
* **nothing lost**: a report Ray recorded but the tracker never got (the driver killed between
  the two) is logged from Ray's records when the trial starts again;
* **the study's names**: one MLflow experiment per study, each run tagged with its study, arm,
  stage, seed, repeat, Ray trial id and code version, its sampled config as params; one
  TensorBoard folder per trial, ``tensorboard/<stage>-<arm>/<trial id>`` in the study folder.

The metrics are the tables': the select mIoU, the report mIoU of a confirm trial's final and
best-on-select models, every loss (the D losses are the GAN balance), the learning rates, at
the training step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.logger import TBXLoggerCallback

from study.records.rows import LOSSES, Split, flat_config, model_of, split_of
from study.records.trials import read_rows

SCALARS = ("lr", "lr_d", "images_per_second", "compute_seconds", *LOSSES)


def metrics_of(row: dict[str, Any]) -> dict[str, float]:
    """What a report puts in a tracker: ``select_miou`` (or ``report_miou_<model>`` for a
    confirm trial's last two), the losses and the learning rates."""
    out: dict[str, float] = {}
    miou = row.get("miou")
    if isinstance(miou, int | float) and miou == miou:
        key = "select_miou" if split_of(row) == Split.SELECT else f"report_miou_{model_of(row)}"
        out[key] = float(miou)
    if split_of(row) == Split.SELECT:
        for name in SCALARS:
            value = row.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
                out[name] = float(value)
    return out


def identity(trial: Any) -> dict[str, str]:
    """The tags that place a trial in its study: arm, stage, seed, repeat, rank."""
    config = flat_config(trial.config or {})
    tags = {"arm": config.get("arm", ""), "stage": config.get("stage", "search"),
            "ray_trial_id": trial.trial_id}  # fmt: skip
    for key in ("seed", "repeat", "rank"):
        if config.get(key) is not None:
            tags[key] = str(config[key])
    return {k: str(v) for k, v in tags.items()}


def sampled(trial: Any, searched: set[str]) -> dict[str, str]:
    config = flat_config(trial.config or {})
    return {k: str(v) for k, v in sorted(config.items()) if k in searched}


def recorded_rows(trial: Any) -> list[dict[str, Any]]:
    """What Ray has recorded of the trial (its folder, where that is a local path)."""
    folder = Path(str(trial.path)) if trial.path else None
    return read_rows(folder) if folder is not None and folder.is_dir() else []


class TensorBoardTracker(TBXLoggerCallback):
    """One TensorBoard folder per trial under ``root`` (``<stage>-<arm>/<trial id>``)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.writers: dict[str, Any] = {}
        self.logged: dict[str, set[tuple[str, int]]] = {}

    def folder(self, trial: Any) -> Path:
        tags = identity(trial)
        return self.root / f"{tags['stage']}-{tags['arm']}" / trial.trial_id

    def log_trial_start(self, trial: Any) -> None:
        if trial.trial_id in self.writers:
            return
        from tensorboardX import SummaryWriter

        folder = self.folder(trial)
        self.logged[trial.trial_id] = logged_scalars(folder)
        self.writers[trial.trial_id] = SummaryWriter(logdir=str(folder), flush_secs=30)
        for row in recorded_rows(trial):  # what the tracker missed (a kill -9 between)
            self._write(trial, row)

    def _write(self, trial: Any, row: dict[str, Any]) -> None:
        step = row.get("step")
        if not isinstance(step, int):
            return
        logged, writer = self.logged[trial.trial_id], self.writers[trial.trial_id]
        for name, value in metrics_of(row).items():
            if (name, step) not in logged:
                writer.add_scalar(name, value, global_step=step)
                logged.add((name, step))

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        self.log_trial_start(trial)
        self._write(trial, result)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        writer = self.writers.pop(trial.trial_id, None)
        if writer is not None:
            writer.close()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for writer in self.writers.values():
            writer.flush()


def logged_scalars(folder: Path) -> set[tuple[str, int]]:
    """The (tag, step) pairs the event files in ``folder`` hold (a record cut by a kill is
    skipped by TensorBoard's reader)."""
    if not folder.is_dir() or not any(folder.glob("events.out.tfevents.*")):
        return set()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {(tag, event.step) for tag in accumulator.Tags()["scalars"]
            for event in accumulator.Scalars(tag)}  # fmt: skip
