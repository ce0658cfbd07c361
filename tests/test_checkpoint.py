"""Checkpoints: atomic, pruned, readable with weights_only, corrupt ones skipped."""

from __future__ import annotations

import logging
import re

import pytest
import torch
from conftest import tiny_config, tiny_data
from ray import tune

from adaptseg.checkpoint import (
    CHECKPOINT_FORMAT,
    REQUIRED_KEYS,
    CheckpointError,
    atomic_torch_save,
    checkpoint_files,
    load_latest,
    load_state,
    save_checkpoint,
)
from adaptseg.trainer import Trainer
from study.stages.trainable import CHECKPOINT_FILE, restore_state


def state(step: int, **extra) -> dict:
    """The smallest state that ``load_state`` accepts: every required key."""
    return {**{key: {} for key in REQUIRED_KEYS}, "format": CHECKPOINT_FORMAT, "step": step,
            **extra}  # fmt: skip


def test_keeps_the_newest_and_leaves_no_temporary_files(tmp_path):
    for step in (10, 20, 30):
        save_checkpoint(state(step, x=torch.ones(2)), tmp_path, keep=2)
    assert [p.name for p in checkpoint_files(tmp_path)] == ["step_00000030.pt", "step_00000020.pt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_corrupt_newest_falls_back_with_a_warning(tmp_path, caplog):
    save_checkpoint(state(10), tmp_path, keep=3)
    newest = save_checkpoint(state(20), tmp_path, keep=3)
    newest.write_bytes(newest.read_bytes()[:20])
    with caplog.at_level(logging.WARNING):
        loaded, path = load_latest(tmp_path)
    assert loaded["step"] == 10 and path.name == "step_00000010.pt"
    assert "step_00000020.pt: not a readable PyTorch weights file" in caplog.text
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert message.startswith(f"checkpoint {newest}: ") and message.endswith(
        "; falling back to the previous checkpoint"
    )


def test_complete_trainer_state_loads_with_weights_only(tmp_path):
    source, target, evals = tiny_data()
    trainer = Trainer(tiny_config(amp="bf16"), source, target, evals)
    trainer.step()
    path = save_checkpoint(trainer.state_dict(), tmp_path, keep=1)
    state = torch.load(path, weights_only=True)
    assert state["step"] == 1 and state["compute_seconds"] > 0
    assert {
        "model",
        "discriminators",
        "optimizer_g",
        "optimizers_d",
        "scaler",
        "streams",
        "rng",
    } <= set(state)
    assert state["streams"]["source"] == {"epoch": 0, "consumed": 1}
    assert state["config"]["backbone"] == "small"


def test_only_corrupt_checkpoints_is_an_error_not_a_silent_restart(tmp_path):
    import pytest

    from adaptseg.checkpoint import CheckpointError

    path = save_checkpoint(state(10), tmp_path, keep=3)
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(CheckpointError, match="none of the 1 checkpoints is readable"):
        load_latest(tmp_path)
    assert load_latest(tmp_path / "empty") is None


def _tune_checkpoints(trial_dir, steps):
    for index, step in enumerate(steps):
        folder = trial_dir / f"checkpoint_{index:06d}"
        folder.mkdir(parents=True)
        atomic_torch_save(state(step), folder / CHECKPOINT_FILE)
    return [trial_dir / f"checkpoint_{i:06d}" / CHECKPOINT_FILE for i in range(len(steps))]


def test_a_corrupt_ray_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    files = _tune_checkpoints(tmp_path / "trial", [6, 12, 18])
    files[2].write_bytes(files[2].read_bytes()[:40])  # truncated, as by a full disk
    with caplog.at_level(logging.WARNING):
        restored, repair = restore_state(tune.Checkpoint.from_directory(str(files[2].parent)))
    assert restored["step"] == 12
    assert "checkpoint_000002" in caplog.text and "falling back" in caplog.text
    assert (
        repair == "checkpoint_000002 could not be read; resumed from checkpoint_000001 (step 12)"
    )
    latest, nothing = restore_state(tune.Checkpoint.from_directory(str(files[1].parent)))
    assert latest["step"] == 12 and nothing is None


def test_a_trial_whose_ray_checkpoints_are_all_corrupt_raises(tmp_path):
    files = _tune_checkpoints(tmp_path / "trial", [6, 12])
    for path in files:
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="none of the 2 checkpoints"):
        restore_state(tune.Checkpoint.from_directory(str(files[1].parent)))


@pytest.mark.parametrize(
    ("change", "expected"),
    [({"format": 99}, "checkpoint format 99; this version reads format"),
     ({"model": None, "drop": "optimizer_g"}, "not an adaptseg checkpoint (no `optimizer_g` key)")],
)  # fmt: skip
def test_a_foreign_or_newer_checkpoint_is_refused_naming_the_file(tmp_path, change, expected):
    change = dict(change)  # the parameter is shared: a second run of the test must see it whole
    values = state(10)
    values.pop(change.pop("drop", None), None)
    values.update(change)
    path = save_checkpoint(values, tmp_path, keep=1)
    with pytest.raises(CheckpointError, match=re.escape(expected)) as raised:
        load_state(path)
    assert str(path) in str(raised.value)


def test_a_checkpoint_of_another_model_does_not_fit_and_says_so(tmp_path):
    source, target, evals = tiny_data()
    saved = Trainer(tiny_config(ndf=16), source, target, evals).state_dict()
    trainer = Trainer(tiny_config(), source, target, evals)
    with pytest.raises(CheckpointError, match="the checkpoint does not fit this run"):
        trainer.load_state_dict(saved)
