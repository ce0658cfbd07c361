"""One Ray Tune trial = one adaptseg Trainer. The only module that needs Ray at training time.

The trial config holds the arm, the stage, the seed and the sampled values; the study spec
(passed with ``tune.with_parameters``) supplies the rest. After each evaluation the trial
reports the metric keys of ``study.rows`` plus ``step``, ``compute_seconds`` and
``images_per_second``; every ``checkpoint.every_evals`` evaluations it saves the trainer's
complete state, and a restored trial continues at the step its checkpoint holds. A confirm
trial ends by evaluating its final model and its best-on-select weights on the ``report``
split (one extra report each, ``split: report``).
"""

from __future__ import annotations

import logging
import math
import posixpath
import resource
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch
from ray import tune

from adaptseg import loop
from adaptseg.checkpoint import CheckpointError, atomic_torch_save, load_state
from adaptseg.config import FIELDS, TrainConfig
from adaptseg.data.build import build_datasets
from adaptseg.loop import Best, Ended, Evaluated, Logged
from adaptseg.trainer import NonFiniteLossError, Trainer
from study.ray_internals.snapshot import is_checkpoint_folder
from study.records.rows import Model, RowStatus, Split, flat_config
from study.spec.arms import arm_config
from study.spec.schema import StudySpec

CHECKPOINT_FILE = "trainer.pt"
log = logging.getLogger(__name__)


def trial_config(spec: StudySpec, config: dict[str, Any]) -> TrainConfig:
    """The trainer config of a trial: spec base + sampled values + arm settings + seed."""
    sampled = {k: v for k, v in config.items() if k in FIELDS and k != "seed"}
    return arm_config(spec, config["arm"], sampled, config.get("seed"))


def _older_checkpoints(checkpoint: tune.Checkpoint) -> list[tune.Checkpoint]:
    """The checkpoints Tune kept before ``checkpoint`` in the same trial folder, newest first
    (listed through the checkpoint's own filesystem, so a storage URI works too)."""
    parent, name = posixpath.split(checkpoint.path.rstrip("/"))
    try:
        infos = checkpoint.filesystem.get_file_info(pafs.FileSelector(parent))
    except OSError:
        return []
    names = sorted(
        (
            i.base_name
            for i in infos
            if i.type == pafs.FileType.Directory
            and is_checkpoint_folder(i.base_name)
            and i.base_name < name
        ),
        reverse=True,
    )
    return [tune.Checkpoint(posixpath.join(parent, n), checkpoint.filesystem) for n in names]


def restore_state(checkpoint: tune.Checkpoint) -> tuple[dict[str, Any], str | None]:
    """The newest readable trainer state among the checkpoints Tune kept, and what was repaired
    (None when the latest one was read): a truncated or corrupt latest one falls back to the
    previous one, as ``adaptseg.train`` does, and says so.

    Raises:
        CheckpointError: none is readable (never silently start the trial over).
    """
    candidates = [checkpoint, *_older_checkpoints(checkpoint)]
    skipped = []
    for candidate in candidates:
        try:
            with candidate.as_directory() as directory:
                state = load_state(Path(directory) / CHECKPOINT_FILE)
        except CheckpointError as exc:
            log.warning("%s; falling back to the previous checkpoint", exc)
            skipped.append(posixpath.basename(candidate.path.rstrip("/")))
            continue
        if not skipped:
            return state, None
        used = posixpath.basename(candidate.path.rstrip("/"))
        return state, (
            f"{', '.join(skipped)} could not be read; resumed from {used} (step {state['step']})"
        )
    raise CheckpointError(
        f"{checkpoint.path}: none of the {len(candidates)} checkpoints of this trial is readable"
    )


def _restore(trainer: Trainer) -> tuple[Best, str | None]:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return Best(), None
    state, repair = restore_state(checkpoint)
    trainer.load_state_dict(state)
    return Best.from_dict(state["best"]), repair


def _report(
    metrics: dict[str, Any], trainer: Trainer | None = None, best: Best | None = None
) -> None:
    if trainer is None or best is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        state = trainer.state_dict()
        state["best"] = best.to_dict()
        atomic_torch_save(state, Path(directory) / CHECKPOINT_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def _final_report_split(trainer: Trainer, best: Best, base: dict[str, Any]) -> None:
    """Confirm stage: the final model and the best-on-select weights, on the report split."""
    final = trainer.evaluate("report")
    tune.report({**base, **final, "split": Split.REPORT, "model": Model.FINAL})
    if best.model is not None:
        trainer.model.load_state_dict(best.model)
    chosen = trainer.evaluate("report")
    tune.report(
        {
            **base,
            **chosen,
            "split": Split.REPORT,
            "model": Model.BEST_ON_SELECT,
            "best_step": best.step,
        }
    )


def peak_memory_gb(device: torch.device) -> float:
    """The trial's peak memory so far: allocated on its GPU, else the worker's resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def ending_row(
    exc: NonFiniteLossError | torch.OutOfMemoryError, step: int, base: dict[str, Any]
) -> dict[str, Any]:
    """The last report of a trial that cannot go on. Both end the trial normally instead of
    raising: a retry would ask for the same memory or diverge the same way, and raising would
    burn Ray's retries."""
    # Its own (step, split, model) key: an evaluation reported at the same step stays.
    row = {**base, "step": step, "split": Split.SELECT, "miou": math.nan}
    if isinstance(exc, NonFiniteLossError):
        return {
            **row,
            "model": RowStatus.DIVERGED,
            "status": RowStatus.DIVERGED,
            "error": str(exc),
            **exc.losses,
        }
    asked = str(exc).strip().splitlines()[0] if str(exc).strip() else "no details"
    message = f"CUDA out of memory at step {step}: {asked}"
    return {**row, "model": RowStatus.ERRORED, "status": RowStatus.ERRORED, "error": message}


def train_trial(config: dict[str, Any], spec: dict[str, Any]) -> None:
    """The Ray Tune function trainable (a confirm trial's config sits under ``case``)."""
    config = flat_config(config)
    if "arm" not in config:
        raise ValueError(
            "this trial has no arm in its config: Ray Tune recorded it without its config "
            "(a kill -9 just after the trial was created); its case runs in a later experiment"
        )
    study = StudySpec(**spec)
    cfg = trial_config(study, config)
    stage = config.get("stage", "search")
    parts = ["select", "report"] if stage == "confirm" else ["select"]
    data = build_datasets(cfg, eval_parts=parts)
    trainer = Trainer(cfg, data.source, data.target, data.eval_sets)
    best, repair = _restore(trainer)
    every, minutes = study.checkpoint.every_evals, study.checkpoint.every_minutes
    last_save = trainer.compute_seconds
    # What this trial ran on and with (a study may span machines of several kinds).
    base = {
        "arm": config["arm"],
        "stage": stage,
        "seed": cfg.seed,
        "amp_used": trainer.amp,
        "device": trainer.capabilities.label,
    }
    if repair is not None:  # reaches the driver's terminal and the trial's row, not only a log
        base["repair"] = repair
    window: dict[str, Any] = {}
    for event in loop.events(trainer, cfg.eval_every, cfg.eval_every, Split.SELECT, best):
        if isinstance(event, Ended):
            tune.report(ending_row(event.error, event.step, base))
            return
        if isinstance(event, Logged):
            window = {**event.losses, "images_per_second": event.images_per_second}
        if not isinstance(event, Evaluated):
            continue
        row = {
            **base,
            **window,
            **event.metrics,
            "step": event.step,
            "split": Split.SELECT,
            "compute_seconds": trainer.compute_seconds,
            "status": RowStatus.OK,
            "peak_memory_gb": peak_memory_gb(trainer.device),
        }
        overdue = minutes is not None and trainer.compute_seconds - last_save >= 60 * minutes
        if (event.step // cfg.eval_every) % every == 0 or event.step == cfg.num_steps or overdue:
            _report(row, trainer, best)
            last_save = trainer.compute_seconds
        else:
            _report(row)
    if stage == "confirm":
        done = {**base, "step": trainer.step_count, "compute_seconds": trainer.compute_seconds}
        _final_report_split(trainer, best, done)
