"""The driver's terminal: one line per finished trial and, every so often, one on the running
trials, each ending with the time the whole study has left.

The time left counts only what still has to run: the running trials' remaining steps, the
stage's trials not started, and every later stage's (``Outlook``), at the steps per second all
trials together trained in this run (``Rate``, shared by the stages). Under ASHA a search trial
not started yet counts the share of its steps that the study's finished search trials reached
(all of them before any finished): an estimate, which the lines call "about".
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from study.records.outcomes import last_error_line
from study.records.rows import Split, ends_badly


@dataclass
class Rate:
    """The steps all trials trained in this run, and since when."""

    trained: int = 0
    started: float = field(default_factory=lambda: time.monotonic())

    def per_second(self) -> float:
        return self.trained / max(time.monotonic() - self.started, 1e-9)


@dataclass(frozen=True)
class Outlook:
    """What the study has left after the current stage, in training steps (estimated)."""

    later_steps: float = 0.0
    expected_share: float = 1.0  # of a search trial's steps, under ASHA (1: no early stopping)


def steps_left(
    planned: int, finished: int, running: dict[str, int], max_steps: int, share: float = 1.0
) -> float:
    """The training steps a stage still has to run: what its running trials have left, plus
    ``share`` of a whole trial for each planned one not started yet. ``finished`` counts every
    finished trial of the stage, those of earlier runs (a resume) and of earlier experiments
    (a grown study) included."""
    not_started = max(planned - finished - len(running), 0)
    remaining = sum(max(max_steps - step, 0) for step in running.values())
    return remaining + not_started * max_steps * share


def time_left_text(steps: float, steps_per_second: float) -> str:
    if steps <= 0 or steps_per_second <= 0:
        return ""
    minutes = steps / steps_per_second / 60
    if minutes < 1:
        return "under a minute left"
    return f"about {minutes:.0f} min left" if minutes < 90 else f"about {minutes / 60:.1f} h left"


def mious_text(best: Any, final: Any) -> str:
    """A search trial's select mIoU: its best evaluation and its last."""

    def number(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, int | float) else "none"

    return f"select mIoU best {number(best)}, final {number(final)}"


class Progress(tune.Callback):
    """The terminal lines of one stage (``stage``: e.g. ``search multi_level``), with the whole
    study's time left."""

    def __init__(
        self,
        stage: str,
        planned: int,
        max_steps: int,
        every_s: float = 30.0,
        rate: Rate | None = None,
        outlook: Outlook | None = None,
    ) -> None:
        self.stage, self.planned, self.max_steps, self.every_s = stage, planned, max_steps, every_s
        self.rate = rate or Rate()
        self.outlook = outlook or Outlook()
        self.finished_before = 0  # set before each fit: trials finished in earlier runs
        self.steps: dict[str, int] = {}
        self.best: dict[str, float] = {}
        self.ended: set[str] = set()
        self.repairs: set[tuple[str, str]] = set()  # said once each
        self.last_line = time.monotonic()

    def _done(self) -> int:
        # Capped: a grown confirm stage's older experiments hold cases no longer planned.
        return min(self.finished_before + len(self.ended), self.planned)

    def _steps_left(self) -> float:
        running = {t: s for t, s in self.steps.items() if t not in self.ended}
        stage = steps_left(
            self.planned, self._done(), running, self.max_steps, self.outlook.expected_share
        )
        return stage + self.outlook.later_steps

    def seconds_left(self) -> float | None:
        """The whole study's time left (None until a rate was measured)."""
        rate = self.rate.per_second()
        return self._steps_left() / rate if rate > 0 else None

    def _left(self) -> str:
        text = time_left_text(self._steps_left(), self.rate.per_second())
        return f"; {text} in the study" if text else ""

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        step = int(result.get("step") or 0)
        repair = result.get("repair")
        if repair and (trial.trial_id, repair) not in self.repairs:
            self.repairs.add((trial.trial_id, repair))
            self._print(f"[{self.stage}] trial {trial.trial_id}: {repair}")
        miou = result.get("miou")
        if result.get("split", Split.SELECT) == Split.SELECT and isinstance(miou, int | float):
            self.best[trial.trial_id] = max(miou, self.best.get(trial.trial_id, miou))
        before = self.steps.get(trial.trial_id)
        if before is None:  # a trial never restored trained from 0; a restored one did not
            fresh = result.get("iterations_since_restore") == result.get("training_iteration")
            before = 0 if fresh else step
        self.rate.trained += max(step - before, 0)
        self.steps[trial.trial_id] = step
        if time.monotonic() - self.last_line >= self.every_s:
            running = sorted((s, t) for t, s in self.steps.items() if t not in self.ended)
            shown = ", ".join(f"{t} step {s}/{self.max_steps}" for s, t in running[:4])
            more = f" and {len(running) - 4} more" if len(running) > 4 else ""
            speed = self.rate.per_second()
            rate = f" ({speed:.1f} steps/s)" if speed > 0 else ""
            self._print(
                f"[{self.stage}] running: {shown}{more}{rate}; "
                f"{self._done()}/{self.planned} done{self._left()}"
            )

    def _print(self, line: str) -> None:
        self.last_line = time.monotonic()
        print(line, file=sys.stderr, flush=True)

    def _say(self, trial: Any, how: str) -> None:
        self.ended.add(trial.trial_id)
        self._print(
            f"[{self.stage}] trial {trial.trial_id} {how} "
            f"({self._done()}/{self.planned} done{self._left()})"
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        step, miou = result.get("step"), result.get("miou")
        scores = mious_text(self.best.get(trial.trial_id, miou), miou)
        if ends_badly(result):
            how = f"{result['status']} at step {step}"
        elif isinstance(step, int) and step < self.max_steps:
            how = f"stopped early at step {step}, {scores}"
        elif result.get("split") == Split.REPORT:
            score = f"{miou:.4f}" if isinstance(miou, int | float) else "none"
            how = f"finished, report mIoU {score} ({result.get('model')})"
        else:
            how = f"finished at step {step}, {scores}"
        self._say(trial, how)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(trial, "errored")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = last_error_line(Path(trial.error_file)) if trial.error_file else None
        self._print(
            f"[{self.stage}] trial {trial.trial_id} failed ({error or 'no message'}); "
            "Ray retries it from its last checkpoint"
        )
