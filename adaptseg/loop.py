"""The training loop as a stream of events, consumed by ``python -m adaptseg.train`` and by the
Ray trainable alike: the loop owns the cadence (when to log, when to evaluate), the loss
averaging window, best-on-select tracking and the two ways a run cannot go on (a non-finite
loss, CUDA out of memory); each consumer only decides what to write and when to save.

After every step the loop yields, in this order: ``Logged`` (every ``log_every`` steps and at
the last), ``Evaluated`` (every ``eval_every`` steps and at the last), then ``Stepped``. A
consumer saves a checkpoint while it holds an event: the trainer's state is then exactly the
step the event names. A run that cannot go on yields ``Ended`` and stops.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adaptseg.trainer import Trainer


@dataclass(frozen=True)
class Logged:
    """The mean of each loss since the previous ``Logged``, and the training throughput."""

    step: int
    losses: dict[str, float]
    images_per_second: float
    compute_seconds: float


@dataclass(frozen=True)
class Evaluated:
    step: int
    split: str
    metrics: dict[str, Any]
    improved: bool  # a new best of the tracked split (``Best``)


@dataclass(frozen=True)
class Stepped:
    step: int
    last: bool


@dataclass(frozen=True)
class Ended:
    """The run cannot go on: a retry would diverge the same way or ask for the same memory."""

    step: int
    error: Exception  # NonFiniteLossError or torch.OutOfMemoryError


Event = Logged | Evaluated | Stepped | Ended


@dataclass
class Best:
    """The best evaluation of the tracked split so far, with a copy of its weights on the CPU
    (the best-on-select model). Saved in checkpoints as ``to_dict()``."""

    miou: float = -math.inf
    step: int = 0
    model: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def from_dict(cls, saved: dict[str, Any] | None) -> Best:
        return cls(**saved) if saved else cls()

    def to_dict(self) -> dict[str, Any]:
        return {"miou": self.miou, "step": self.step, "model": self.model}

    def offer(self, trainer: Trainer, miou: float) -> bool:
        if not miou > self.miou:
            return False
        weights = trainer.model.state_dict()
        self.miou, self.step = miou, trainer.step_count
        self.model = {k: v.detach().cpu().clone() for k, v in weights.items()}
        return True


class LossWindow:
    """Mean of each loss since the last flush, and source images per training second."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer, self.rows = trainer, []
        self.seconds, self.steps = trainer.train_seconds, trainer.step_count

    def add(self, row: dict[str, float]) -> None:
        self.rows.append(row)

    def flush(self) -> Logged:
        losses: dict[str, float] = {}
        for key in sorted({k for row in self.rows for k in row}):
            values = [row[key] for row in self.rows if key in row]
            losses[key] = sum(values) / len(values)
        cfg, trainer = self.trainer.cfg, self.trainer
        seconds = trainer.train_seconds - self.seconds
        images = (trainer.step_count - self.steps) * cfg.batch_size * cfg.iter_size
        self.rows = []
        self.seconds, self.steps = trainer.train_seconds, trainer.step_count
        return Logged(
            trainer.step_count,
            losses,
            images / seconds if seconds > 0 else 0.0,
            trainer.compute_seconds,
        )


def events(
    trainer: Trainer,
    log_every: int,
    eval_every: int,
    eval_split: str = "select",
    best: Best | None = None,
) -> Iterator[Event]:
    """Train from the trainer's current step to ``cfg.num_steps``; ``best`` (when given) is
    updated with every evaluation of ``eval_split``."""
    import torch

    from adaptseg.trainer import NonFiniteLossError

    window = LossWindow(trainer)
    num_steps = trainer.cfg.num_steps
    while trainer.step_count < num_steps:
        try:
            window.add(trainer.step())
        except (NonFiniteLossError, torch.OutOfMemoryError) as exc:
            yield Ended(trainer.step_count, exc)
            return
        step = trainer.step_count
        last = step == num_steps
        if step % log_every == 0 or last:
            yield window.flush()
        if step % eval_every == 0 or last:
            metrics = trainer.evaluate(eval_split)
            improved = best is not None and best.offer(trainer, metrics["miou"])
            yield Evaluated(step, eval_split, metrics, improved)
        yield Stepped(step, last)
