"""Checkpoints: atomic, pruned, readable with weights_only, corrupt ones skipped."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import tiny_config, tiny_data
from ray import tune

from adaptseg.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    checkpoint_files,
    load_latest,
    save_checkpoint,
)
from adaptseg.trainer import Trainer
from study.trainable import CHECKPOINT_FILE, restore_state


def test_keeps_the_newest_and_leaves_no_temporary_files(tmp_path):
    for step in (10, 20, 30):
        save_checkpoint({"step": step, "x": torch.ones(2)}, tmp_path, keep=2)
    assert [p.name for p in checkpoint_files(tmp_path)] == ["step_00000030.pt", "step_00000020.pt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_corrupt_newest_falls_back_with_a_warning(tmp_path, caplog):
    save_checkpoint({"step": 10}, tmp_path, keep=3)
    newest = save_checkpoint({"step": 20}, tmp_path, keep=3)
    newest.write_bytes(newest.read_bytes()[:20])
    with caplog.at_level(logging.WARNING):
        state, path = load_latest(tmp_path)
    assert state["step"] == 10 and path.name == "step_00000010.pt"
    assert "step_00000020.pt: unreadable checkpoint" in caplog.text


def test_complete_trainer_state_loads_with_weights_only(tmp_path):
    source, target, evals = tiny_data()
    trainer = Trainer(tiny_config(amp="bf16"), source, target, evals)
    trainer.step()
    path = save_checkpoint(trainer.state_dict(), tmp_path, keep=1)
    state = torch.load(path, weights_only=True)
    assert state["step"] == 1 and state["compute_seconds"] > 0
    assert {
        "model",
        "d_main",
        "d_aux",
        "optimizer_g",
        "optimizer_d",
        "scaler",
        "streams",
        "rng",
    } <= set(state)
    assert state["streams"]["source"] == {"epoch": 0, "consumed": 1}
    assert state["config"]["backbone"] == "small"


def test_only_corrupt_checkpoints_is_an_error_not_a_silent_restart(tmp_path):
    import pytest

    from adaptseg.checkpoint import CheckpointError

    path = save_checkpoint({"step": 10}, tmp_path, keep=3)
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(CheckpointError, match="none of the 1 checkpoints is readable"):
        load_latest(tmp_path)
    assert load_latest(tmp_path / "empty") is None


def _tune_checkpoints(trial_dir, steps):
    for index, step in enumerate(steps):
        folder = trial_dir / f"checkpoint_{index:06d}"
        folder.mkdir(parents=True)
        atomic_torch_save({"step": step}, folder / CHECKPOINT_FILE)
    return [trial_dir / f"checkpoint_{i:06d}" / CHECKPOINT_FILE for i in range(len(steps))]


def test_a_corrupt_ray_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    files = _tune_checkpoints(tmp_path / "trial", [6, 12, 18])
    files[2].write_bytes(files[2].read_bytes()[:40])  # truncated, as by a full disk
    with caplog.at_level(logging.WARNING):
        state = restore_state(tune.Checkpoint.from_directory(str(files[2].parent)))
    assert state["step"] == 12
    assert "checkpoint_000002" in caplog.text and "falling back" in caplog.text


def test_a_trial_whose_ray_checkpoints_are_all_corrupt_raises(tmp_path):
    files = _tune_checkpoints(tmp_path / "trial", [6, 12])
    for path in files:
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="none of the 2 checkpoints"):
        restore_state(tune.Checkpoint.from_directory(str(files[1].parent)))
