"""Ctrl-C or SIGTERM inside a training step takes effect after the step: the checkpoint it
leaves resumes to the very same weights as a run that was never interrupted."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

import adaptseg.trainer as trainer_module
from adaptseg.checkpoint import load_latest
from adaptseg.interrupts import DeferredInterrupts, StopRequested
from adaptseg.train import run

STEPS = 12


def config():
    # Multi-level, so every phase of the iteration (both levels, both D) runs.
    return tiny_config(
        num_steps=STEPS, schedule_steps=STEPS, eval_every=4, checkpoint_every=4, log_every=2,
        multi_level=True, device="cpu",
    )  # fmt: skip


def final_state(out: Path) -> dict:
    state, _ = load_latest(out / "checkpoints")
    assert state["step"] == STEPS
    return state


def assert_same(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            if key not in ("compute_seconds", "train_seconds"):
                assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{index}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference")
    for _ in run(config(), out):
        pass
    return final_state(out)


def signal_on_call(monkeypatch, name: str, call: int, signum: int) -> None:
    """Send ``signum`` to this process at the ``call``-th call of ``adaptseg.trainer.<name>``."""
    original = getattr(trainer_module, name)
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer_module, name, wrapped)


# (function, call that gets the signal): source CE of step 6; the adversarial loss of step 6
# (the G phase, multi-level: 4 D calls a step, the first two fool D); D's own loss in step 6;
# the confusion update of the evaluation at step 8.
PHASES = [
    ("seg_loss", 2 * 5 + 1),
    ("adv_loss", 6 * 5 + 2),
    ("adv_loss", 6 * 5 + 5),
    ("metrics_from_confusion", 2),
]


@pytest.mark.parametrize(("name", "call"), PHASES, ids=[f"{n}-{c}" for n, c in PHASES])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_inside_a_step_leaves_a_checkpoint_that_resumes_bit_for_bit(
    tmp_path, monkeypatch, reference, name, call, signum
):
    with monkeypatch.context() as patch:
        signal_on_call(patch, name, call, signum)
        with pytest.raises(StopRequested):
            for _ in run(config(), tmp_path):
                pass
    stopped, _ = load_latest(tmp_path / "checkpoints")
    assert 0 < stopped["step"] < STEPS
    for _ in run(config(), tmp_path):
        pass
    assert_same(final_state(tmp_path), reference)


def test_the_checkpoint_of_a_stop_holds_the_batch_norm_counts_of_whole_steps(
    tmp_path, monkeypatch
):
    # BatchNorm counts one batch per forward: source + target per step in a multi-level run.
    with monkeypatch.context() as patch:
        signal_on_call(patch, "adv_loss", 6 * 5 + 2, signal.SIGINT)
        with pytest.raises(StopRequested):
            for _ in run(config(), tmp_path):
                pass
    state, path = load_latest(tmp_path / "checkpoints")
    assert path.name == "step_00000006.pt" and state["step"] == 6
    assert int(state["model"]["bn1.num_batches_tracked"]) == 2 * 6


def test_a_second_signal_stops_at_once_without_a_checkpoint(tmp_path):
    # Whatever SIGINT did before (ignored, when pytest runs in the background of a shell that
    # is not interactive), it is put back as it was.
    found = signal.getsignal(signal.SIGINT)
    stop = DeferredInterrupts()
    with stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested == signal.SIGINT
        with pytest.raises(KeyboardInterrupt) as raised:
            os.kill(os.getpid(), signal.SIGINT)
        assert not isinstance(raised.value, StopRequested)
    assert signal.getsignal(signal.SIGINT) is found
