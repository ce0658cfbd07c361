"""Randomised kill -9 of a study as users run it: ASHA on, two trials at a time, at least 8
kills of the driver (and of everything it started) at seeded random moments over the whole
study, the same command run again after each, then the invariants of tests/invariants.py.

Kills land in the first ``KILL_RUNS`` runs only; the run after them goes uninterrupted. Random
moments alone could keep a study from finishing: a seed whose moments keep landing at start-up
or just after a table export (seed 404598173 in CI) killed 40 runs in a row, each before it
trained much.

The seed is new on every run unless ``CHAOS_SEED`` is set (``.ci/run`` sets and prints one);
``CHAOS_SEED=<n> python -m pytest tests/test_chaos_random.py`` replays a failure's kill plan
(the moments are the same; how far the study got by then depends on the machine)."""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest
from invariants import check_study
from study_helpers import kill_tagged, study_command, tagged_env, tiny_spec, write_spec
from test_study import bench  # noqa: F401  (the shared synthetic benchmark fixture)

MIN_KILLS, KILL_RUNS, MAX_RUNS, PROGRESS_CAP_S = 8, 24, 40, 4.0


def chaos_spec(benchmark: Path) -> dict:
    return tiny_spec(
        benchmark,
        train={"num_steps": 48, "schedule_steps": 48, "eval_every": 6},
        arms={
            "source_only": {"use_target": False, "multi_level": False},
            "bn_control": {"multi_level": False, "lambda_adv_main": 0.0},
            "single_level": {"multi_level": False},
        },
        search={"num_samples": 5},
        scheduler={"kind": "asha", "grace_period": 6, "reduction_factor": 2},
        confirm={"top_k": 1, "seeds": [0, 1, 2]},
        resources={"cpus_per_trial": 1, "max_concurrent_trials": 2},
    )


def _rows(root: Path, pattern: str) -> int:
    total = 0
    for path in (root / "ray").glob(f"{pattern}/*/result.json"):
        try:
            total += path.read_bytes().count(b"\n")
        except OSError:
            continue
    return total


def _newer(path: Path, since: float) -> bool:
    try:
        return path.stat().st_mtime > since
    except OSError:
        return False


def moment(rng: random.Random, root: Path, started: float):
    """A seeded random kill moment of this run: a random time after training progressed, or
    just after a table export, the confirm plan or the report was written."""
    confirm_started = _rows(root, "confirm*") > 0
    kinds = ["progress"] * 4 + ["startup"] * 2 + ["export"] * 2 + ["plan"]
    kinds += ["report"] * (2 * confirm_started)
    kind = rng.choice(kinds)
    if kind == "plan" and (root / "confirm_plan.json").exists():
        kind = "progress"
    delay = {"progress": rng.uniform(0.2, 2.5), "startup": rng.uniform(0.5, 8.0),
             "export": rng.uniform(0.0, 0.4),
             "plan": rng.uniform(0.0, 1.0), "report": rng.uniform(0.0, 0.2)}[kind]  # fmt: skip
    baseline = _rows(root, "*")
    events = {
        "progress": lambda: _rows(root, "*") > baseline,
        "startup": lambda: True,
        "export": lambda: _newer(root / "tables" / "trials.parquet", started),
        "plan": lambda: (root / "confirm_plan.json").exists(),
        "report": lambda: _newer(root / "report.html", started),
    }
    seen: list[float] = []

    def ready() -> bool:
        if not seen and events[kind]():
            seen.append(time.time())
        return bool(seen) and time.time() >= seen[0] + delay

    return kind, ready


def progress_cap(root: Path):
    baseline, seen = _rows(root, "*"), []

    def exceeded() -> bool:
        if not seen and _rows(root, "*") > baseline:
            seen.append(time.time())
        return bool(seen) and time.time() > seen[0] + PROGRESS_CAP_S

    return exceeded


def phase(root: Path) -> str:
    """Where the study stood when it was killed (from its files)."""
    if (root / "summary.json").exists():
        return "after the summary"
    if (root / "report.html").exists():
        return "report written"
    if _rows(root, "confirm*"):
        return "confirm"
    if (root / "confirm_plan.json").exists():
        return "between stages"
    return "search"


@pytest.mark.slow
@pytest.mark.faults
def test_random_kill_9_of_an_asha_study_keeps_every_invariant(tmp_path, bench):  # noqa: F811
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(10**9))
    print(f"chaos seed {seed} (replay: CHAOS_SEED={seed} pytest tests/test_chaos_random.py)")
    rng = random.Random(seed)
    spec = chaos_spec(bench)
    spec_path = write_spec(tmp_path, spec)
    results, root = tmp_path / "results", tmp_path / "results" / "tiny"
    kills: list[tuple[str, str]] = []
    plan_bytes = None
    final = None
    for run in range(MAX_RUNS):
        tag = f"chaos-{seed}-{run}"
        started = time.time()
        with (tmp_path / f"run-{run}.err").open("w") as log:  # a pipe nobody reads can fill
            driver = subprocess.Popen(
                study_command(spec_path, results), env=tagged_env(tag), cwd=tmp_path,
                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
            )  # fmt: skip
        kind, ready = moment(rng, root, started)
        if run >= KILL_RUNS:
            ready = bool  # returns False: this run is left to finish the study
        # Until MIN_KILLS kills happened, a run may progress at most PROGRESS_CAP_S seconds
        # (after its first new row), so that a fast machine cannot finish the study first.
        capped = progress_cap(root) if len(kills) < MIN_KILLS else (lambda: False)
        try:
            deadline = time.time() + 1800
            while driver.poll() is None and not ready() and not capped():
                assert time.time() < deadline, f"seed {seed}: run {run} hangs (run-{run}.err)"
                time.sleep(0.05)
            if (root / "summary.json").exists():  # finished: a kill now tests nothing new
                driver.wait(timeout=600)
            if driver.poll() is None:
                kills.append((kind, phase(root)))
                kill_tagged(tag)
                driver.wait(timeout=60)
            else:
                final = driver
        finally:
            if driver.poll() is None:
                driver.kill()
            kill_tagged(tag)
        if (root / "confirm_plan.json").exists():
            current = (root / "confirm_plan.json").read_bytes()
            plan_bytes = plan_bytes or current
            assert current == plan_bytes, f"confirm_plan.json changed (seed {seed})"
        if final is not None:
            break
    assert final is not None, f"the study never finished in {MAX_RUNS} runs (seed {seed})"
    err = (tmp_path / f"run-{run}.err").read_text()
    assert final.returncode == 0, f"seed {seed}: the last run failed:\n{err[-3000:]}"
    assert len(kills) >= MIN_KILLS, f"seed {seed}: only {len(kills)} kills: {kills}"
    counts = check_study(root, spec)
    print(f"seed {seed}: {len(kills)} kills survived, {len(kills) + 1} runs, kills at {kills}")
    print(f"seed {seed}: {counts}")
