"""Shared fixtures: tiny CPU configs and datasets."""

from __future__ import annotations

import os

import pytest
import torch

from adaptseg.config import TrainConfig, build_config
from adaptseg.data import RandomSegDataset

# Network traffic stays on loopback: MLflow 3 would send usage telemetry from the tests' own
# mlflow calls and the `mlflow ui` they start (both inherit this).
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

# Two threads as CI has; mutation testing forks a test process per mutant, and a forked
# OpenMP pool deadlocks, so .ci/mutation asks for one.
torch.set_num_threads(int(os.environ.get("ADAPTSEG_TEST_THREADS", "2")))

TINY = {
    "source": "random",
    "target": "random",
    "backbone": "small",
    "ndf": 8,
    "input_size_source": "64x64",
    "input_size_target": "64x64",
    "optimizer": "adam",
    "lr": 1e-3,
    "num_steps": 100,
    "eval_every": 10,
    "num_workers": 0,
    "device": "cpu",  # bit-exact comparisons hold on CPU; a GPU machine runs these there too
}


def tiny_config(**overrides) -> TrainConfig:
    return build_config({**TINY, **overrides}, origin="test")


def tiny_data(length: int = 6, size: tuple[int, int] = (64, 64)):
    source = RandomSegDataset(length, size, seed=0)
    target = RandomSegDataset(length, size, seed=0, domain=1, with_labels=False)
    val = RandomSegDataset(3, size, seed=1, domain=1)
    return source, target, {"select": val}


@pytest.fixture
def tiny_cfg() -> TrainConfig:
    return tiny_config()


def pytest_assertrepr_compare(op: str, left: object, right: object) -> list[str] | None:
    """A failed ``in`` or ``==`` on a report (megabytes: plotly.js is embedded) would make pytest
    diff the two texts for a very long time; say what was compared instead."""
    texts = [v for v in (left, right) if isinstance(v, str)]
    if texts and max(len(v) for v in texts) > 100_000:
        shown = [v if len(v) <= 300 else f"<a text of {len(v)} characters>" for v in texts]
        return [f"{shown[0]!r} {op} {shown[-1]!r}: failed (no diff of texts this long)"]
    return None


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


def pytest_sessionfinish(session, exitstatus) -> None:
    """A child process still alive when the tests end would keep CI waiting for ever (a loader
    worker that ignores SIGTERM once did): stop the loader workers the way the project does at
    exit, then kill and name whatever a test left behind, and fail the run."""
    import os
    import signal

    from adaptseg.data.stream import _shut_down_all_workers

    _shut_down_all_workers()
    left = []
    for pid in _children(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
            left.append(f"{pid}: {command[:200]}")
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
    if left:
        print("\nprocesses the tests left running (killed):\n  " + "\n  ".join(left))
        session.exitstatus = 1
