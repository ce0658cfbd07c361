"""The one training loop (adaptseg.loop): its events, and both commands consuming it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import tiny_config, tiny_data
from study_helpers import tiny_spec

from adaptseg import loop
from adaptseg.data.build import build_datasets
from adaptseg.data.synthetic import generate
from adaptseg.loop import Best, Ended, Logged, Stepped, events
from adaptseg.trainer import NonFiniteLossError, Trainer


def make_trainer(**overrides) -> Trainer:
    source, target, evals = tiny_data()
    return Trainer(tiny_config(**overrides), source, target, evals)


def test_the_loop_logs_evaluates_and_steps_in_order_to_the_last_step():
    trainer = make_trainer(num_steps=5, eval_every=5)
    best = Best()
    seen = [(type(e).__name__, e.step) for e in events(trainer, 2, 3, "select", best)]
    assert seen == [
        ("Stepped", 1), ("Logged", 2), ("Stepped", 2), ("Evaluated", 3), ("Stepped", 3),
        ("Logged", 4), ("Stepped", 4), ("Logged", 5), ("Evaluated", 5), ("Stepped", 5),
    ]  # fmt: skip
    assert trainer.step_count == 5 and best.step in (3, 5) and best.model is not None


def test_logged_losses_are_the_means_since_the_previous_log():
    trainer = make_trainer(num_steps=4, eval_every=4)
    steps: list[dict] = []
    real_step = trainer.step
    trainer.step = lambda: steps.append(real_step()) or steps[-1]
    logged = [e for e in events(trainer, 2, 100) if isinstance(e, Logged)]
    assert [e.step for e in logged] == [2, 4]
    for event, window in zip(logged, (steps[:2], steps[2:])):
        for key, value in event.losses.items():
            assert value == pytest.approx(sum(r[key] for r in window) / 2)
        assert event.images_per_second > 0


def test_best_keeps_the_first_of_equal_scores_and_the_weights_of_its_step():
    trainer = make_trainer(num_steps=2, eval_every=2)
    best = Best(miou=0.5, step=1, model=None)
    assert not best.offer(trainer, 0.5) and best.step == 1
    assert not best.offer(trainer, math.nan)
    assert best.offer(trainer, 0.6) and best.step == trainer.step_count
    assert best.model.keys() == trainer.model.state_dict().keys()
    assert Best.from_dict(best.to_dict()) == best


def test_a_diverging_run_ends_with_the_error_and_steps_no_further():
    trainer = make_trainer(optimizer="sgd", lr=1e8, momentum=0.0, num_steps=30, eval_every=30)
    seen = list(events(trainer, 1, 1000))
    assert isinstance(seen[-1], Ended) and isinstance(seen[-1].error, NonFiniteLossError)
    assert seen[-1].step == trainer.step_count < 30
    assert not any(isinstance(e, Stepped) and e.step > seen[-1].step for e in seen)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    generate(root, seed=0, size=(64, 128), counts=(24, 24, 16))
    return root


def test_one_loop_serves_both_commands_with_the_same_numbers(bench, tmp_path, monkeypatch):
    """``python -m adaptseg.train`` and the Ray trainable both train through ``loop.events``,
    and the same config gives the same evaluations in both."""
    from ray import tune

    from adaptseg.train import run
    from study.spec.schema import StudySpec
    from study.stages import trainable

    calls = []
    real_events = loop.events
    monkeypatch.setattr(
        loop, "events", lambda *a, **k: calls.append(a[1:3]) or real_events(*a, **k)
    )
    reports: list[dict] = []
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: reports.append(metrics))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)

    spec = StudySpec.model_validate(tiny_spec(bench))
    config = {"arm": "single_level", "stage": "search", "lr": 1e-3, "lambda_adv_main": 2e-3}
    trainable.train_trial(config, spec.dump())
    cfg = trainable.trial_config(spec, config)
    records = list(run(cfg, tmp_path / "run", build_datasets(cfg, eval_parts=["select"])))

    assert calls == [(cfg.eval_every, cfg.eval_every), (cfg.log_every, cfg.eval_every)]
    from_trial = {r["step"]: r["miou"] for r in reports}
    from_train = {r["step"]: r["miou"] for r in records if r["kind"] == "eval"}
    assert from_trial == from_train and sorted(from_trial) == [2, 4, 6]
