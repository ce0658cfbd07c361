"""The search decides on results, not on their arrival order: the same trials are asked with the
same history and stopped at the same rungs, whichever of two concurrent trials reports first."""

from __future__ import annotations

from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from study.ray_internals.api import AskOrderASHA
from study.stages.ask_order import AskOrderLimiter


class Recorder(Searcher):
    """A searcher that writes down what it is asked and told."""

    def __init__(self) -> None:
        super().__init__(metric="miou", mode="max")
        self.calls: list[tuple] = []

    def suggest(self, trial_id: str) -> dict:
        self.calls.append(("suggest", trial_id))
        return {"x": len(self.calls)}

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        self.calls.append(("told", trial_id, (result or {}).get("miou")))


def drive(order_of_endings: list[str]) -> tuple[list[tuple], list[str | None]]:
    """Four trials, two slots; trials end in ``order_of_endings`` (of those running)."""
    inner = Recorder()
    limiter = AskOrderLimiter(inner, slots=2, total=4)
    refused = []
    names = iter(f"t{i}" for i in range(4))
    pending = next(names)
    running: set[str] = set()
    endings = list(order_of_endings)
    while pending is not None or running:
        while pending is not None:
            if limiter.suggest(pending) is None:
                refused.append(pending)
                break
            running.add(pending)
            pending = next(names, None)
        ended = next(t for t in endings if t in running)
        endings.remove(ended)
        running.discard(ended)
        limiter.on_trial_complete(ended, {"miou": float(ended[1:]) / 10})
    return inner.calls, refused


def test_concurrent_trials_are_asked_and_told_in_ask_order_whoever_ends_first():
    first, refused_first = drive(["t0", "t1", "t2", "t3"])
    second, refused_second = drive(["t1", "t0", "t3", "t2"])
    assert first == second == [
        ("suggest", "t0"), ("suggest", "t1"), ("told", "t0", 0.0), ("suggest", "t2"),
        ("told", "t1", 0.1), ("suggest", "t3"), ("told", "t2", 0.2), ("told", "t3", 0.3),
    ]  # fmt: skip
    # t2 waits for t0 (two slots: t0 must have ended), whether or not t1 ended first; when t1
    # ended first, t2 was refused once more
    assert refused_second.count("t2") == refused_first.count("t2") + 1


def test_the_limiter_keeps_its_order_across_a_restore():
    inner = Recorder()
    limiter = AskOrderLimiter(inner, slots=2, total=4)
    for trial in ("t0", "t1"):
        limiter.suggest(trial)
    limiter.on_trial_complete("t1", {"miou": 0.1})
    restored = AskOrderLimiter(Recorder(), slots=2, total=4)
    restored.set_state(limiter.get_state())
    assert restored.asked == ["t0", "t1"] and set(restored.ended) == {"t1"}
    assert restored.suggest("t2") is None  # t0 has not ended: still waits
    restored.on_trial_complete("t0", {"miou": 0.0})
    assert [c[:2] for c in restored.searcher.calls] == [("told", "t0")]
    limiter.on_trial_complete("t0", None, error=True)
    again = AskOrderLimiter(Recorder(), slots=2, total=4)
    again.set_state(limiter.get_state())
    assert set(again.ended) == {"t1"}, "an errored trial is retried by the rerun: not ended"


def results(order: list[tuple[str, float]]) -> dict[str, str]:
    """Feed ASHA (grace 2, reduction 2, max 8, two slots) one report per (trial, step, value)
    in ``order``; returns each trial's decision at its report."""
    asha = AskOrderASHA(
        time_attr="step", metric="miou", mode="max", max_t=8, grace_period=2,
        reduction_factor=2, slots=2,
    )  # fmt: skip
    trials = {name: SimpleNamespace(trial_id=name) for name in ("a", "b", "c", "d")}
    for trial in trials.values():  # the ask order
        asha.on_trial_add(None, trial)
    decisions = {}
    for name, step, value in order:
        decisions[f"{name}@{step}"] = asha.on_trial_result(
            None, trials[name], {"step": step, "miou": value}
        )
    return decisions


def test_asha_judges_a_trial_only_against_trials_asked_slots_places_before_it():
    # a and b run together, then c and d. c is compared with a only, d with a and b.
    one = results([("a", 2, 0.5), ("b", 2, 0.1), ("c", 2, 0.3), ("d", 2, 0.2)])
    two = results([("b", 2, 0.1), ("a", 2, 0.5), ("d", 2, 0.2), ("c", 2, 0.3)])
    assert one == two
    stop, go = TrialScheduler.STOP, TrialScheduler.CONTINUE
    assert one == {"a@2": go, "b@2": go, "c@2": stop, "d@2": stop}


def test_rays_own_asha_decides_by_arrival_order():
    """What the above guards against: Tune's ASHA stops b when a reported first, not after."""
    from ray.tune.schedulers import ASHAScheduler

    def decide(order: list[tuple[str, float]]) -> str:
        asha = ASHAScheduler(time_attr="step", metric="miou", mode="max", max_t=8,
                             grace_period=2, reduction_factor=2)  # fmt: skip
        trials = {name: SimpleNamespace(trial_id=name) for name in ("a", "b")}
        for trial in trials.values():
            asha.on_trial_add(None, trial)
        return {n: asha.on_trial_result(None, trials[n], {"step": 2, "miou": v}) for n, v in order}

    assert decide([("a", 0.5), ("b", 0.1)])["b"] == TrialScheduler.STOP
    assert decide([("b", 0.1), ("a", 0.5)])["b"] == TrialScheduler.CONTINUE
