"""The same spec gives the same search: trials asked, told and judged in the order they were
asked, whatever order their results arrive in.

With two or more trials at once, three things depend on arrival order: which trials Optuna has
heard of when it proposes the next one, which rung values ASHA compares a trial with, and so
which trials ASHA lets finish. Here, with ``slots`` trials at once:

* trial ``k`` (in ask order) is asked only once trials ``0 .. k - slots`` have ended, and
  Optuna then knows how exactly those ended (``AskOrderLimiter``): a trial that ended sooner is
  told later, so TPE sees the same history on every run (the others are RUNNING to it, which
  its constant liar treats alike however far they got);
* ASHA compares trial ``k`` at a rung only with trials ``0 .. k - slots``, which ended before
  it started (``study.ray_internals.api.AskOrderASHA``).

The first ``slots`` trials of a search are never stopped early (no trial ended before them),
as Ray's ASHA never stops the first trial at a rung. A slot idles only when a trial ends before
every trial asked ``slots`` places before it.
"""

from __future__ import annotations

import copy
from typing import Any

from ray.tune.search import Searcher


class AskOrderLimiter(Searcher):
    """Wraps a searcher: at most ``slots`` trials at once, asked in order, told in order.

    ``total``: the trials this experiment asks for; once all have ended, every completion not
    told yet is told."""

    def __init__(self, searcher: Searcher, slots: int, total: int) -> None:
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher, self.slots, self.total = searcher, max(int(slots), 1), total
        self.asked: list[str] = []
        self.ended: dict[str, tuple[dict | None, bool]] = {}  # trial id -> (result, error)
        self.told: set[str] = set()

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:  # fmt: skip
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return True  # this limiter decides concurrency

    def _may_ask(self) -> bool:
        k = len(self.asked)
        return all(trial in self.ended for trial in self.asked[: max(k - self.slots + 1, 0)])

    def _tell(self, upto: int) -> None:
        """Tell the searcher, in ask order, how the trials of index < ``upto`` ended."""
        for trial in self.asked[:upto]:
            if trial in self.ended and trial not in self.told:
                result, error = self.ended[trial]
                self.searcher.on_trial_complete(trial, result=result, error=error)
                self.told.add(trial)

    def suggest(self, trial_id: str) -> dict | None:
        if not self._may_ask():
            return None
        self._tell(len(self.asked) - self.slots + 1)
        config = self.searcher.suggest(trial_id)
        if config not in (None, Searcher.FINISHED):
            self.asked.append(trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id not in self.asked:  # a trial a snapshot older than this searcher knew
            self.searcher.on_trial_complete(trial_id, result=result, error=error)
            return
        self.ended[trial_id] = (result, error)
        self.told.discard(trial_id)  # a retried trial that errored before ends again
        if len(self.asked) >= self.total and all(t in self.ended for t in self.asked):
            self._tell(len(self.asked))  # the last trial ended: nothing more will be asked
        else:
            self._tell(len(self.asked) - self.slots + 1)

    # Tune's search generator saves a wrapper's state beside its searcher's and restores both:
    # get_state and set_state for this, save and restore for the searcher.
    def get_state(self) -> dict[str, Any]:
        return copy.deepcopy({"asked": self.asked, "ended": self.ended, "told": self.told})

    def set_state(self, state: dict[str, Any]) -> None:
        # Ray resumes the trials that had not ended, and retries the errored ones: each ends
        # again and is told again.
        self.asked = list(state["asked"])
        self.ended = {t: ended for t, ended in state["ended"].items() if not ended[1]}
        self.told = set(state["told"]) & set(self.ended)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)
