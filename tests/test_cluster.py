"""Joining a real two-node Ray cluster started by the test on loopback addresses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from invariants import check_study
from study_helpers import (
    kill_tagged,
    ray_cli,
    run_study,
    start_study,
    tagged_env,
    tiny_spec,
    wait_for,
    write_spec,
)
from test_study import bench  # noqa: F401  (the shared synthetic benchmark fixture)

HEAD, SECOND = "127.0.0.2", "127.0.0.3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HEAD, 0))
        return sock.getsockname()[1]


class Cluster:
    """A head at 127.0.0.2 and a second node at 127.0.0.3, one CPU each. Each node's processes
    carry their own tag, so the test can kill the second node alone and start it again; never
    `ray stop`, which would end other Rays."""

    def __init__(self) -> None:
        stamp = f"{os.getpid()}-{time.time_ns()}"
        self.head_tag, self.second_tag = f"cluster-head-{stamp}", f"cluster-second-{stamp}"
        self.address = f"{HEAD}:{free_port()}"

    def start_head(self) -> None:
        port = self.address.rsplit(":", 1)[1]
        subprocess.run(
            [*ray_cli(), "start", "--head", f"--node-ip-address={HEAD}", f"--port={port}",
             "--include-dashboard=false", *COMMON],
            check=True, env=tagged_env(self.head_tag), capture_output=True, timeout=120,
        )  # fmt: skip

    def start_second(self) -> None:
        subprocess.run(
            [*ray_cli(), "start", f"--address={self.address}", f"--node-ip-address={SECOND}",
             *COMMON],
            check=True, env=tagged_env(self.second_tag), capture_output=True, timeout=120,
        )  # fmt: skip

    def kill_second(self) -> None:
        kill_tagged(self.second_tag)

    def stop(self) -> None:
        kill_tagged(self.second_tag)
        kill_tagged(self.head_tag)
        marker = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if marker.is_file() and marker.read_text().strip() == self.address:
            marker.unlink()


COMMON = ["--num-cpus=1", "--disable-usage-stats"]


@pytest.fixture
def cluster():
    nodes = Cluster()
    try:
        nodes.start_head()
        nodes.start_second()
        yield nodes
    finally:
        nodes.stop()


@pytest.mark.slow
def test_study_joins_a_two_node_cluster_and_uses_both_nodes(tmp_path, bench, cluster):  # noqa: F811
    spec = tiny_spec(
        bench,
        arms={"source_only": {"use_target": False, "multi_level": False}},
        # Trials of a few seconds, shorter than a worker's start: both workers must start at
        # once (study.ray_internals.api.pending_trials), or the second trial waits, then takes
        # the first trial's reused worker and both run on one node.
        train={"num_steps": 240, "schedule_steps": 240, "eval_every": 80},
        search={"num_samples": 2, "space": {"lr": {"log_uniform": [5e-4, 2e-3]}}},
        scheduler={"kind": "none"},
        confirm={"top_k": 0, "seeds": [0]},
        ray={},
    )
    spec_path = write_spec(tmp_path, spec)
    result = run_study(spec_path, tmp_path / "results", "--address", cluster.address)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = tmp_path / "results" / "tiny" / "ray" / "search-source_only"
    nodes = set()
    for trial in experiment.iterdir():
        if (trial / "result.json").is_file():
            rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
            assert rows[-1]["step"] == 240
            nodes |= {row["node_ip"] for row in rows}
    assert nodes == {HEAD, SECOND}


def rows_of(experiment: Path) -> dict[str, list[dict]]:
    out = {}
    for result in experiment.glob("*/result.json"):
        lines = result.read_text().splitlines()
        out[result.parent.name] = [json.loads(line) for line in lines if line.strip()]
    return out


@pytest.mark.slow
@pytest.mark.faults
def test_a_node_killed_with_9_and_restarted_loses_no_trial(tmp_path, bench, cluster):  # noqa: F811
    """kill -9 of every process of the second node while it trains a trial, then the node is
    started again: the trial is retried from its checkpoint and the study ends complete."""
    spec = tiny_spec(
        bench,
        arms={"source_only": {"use_target": False, "multi_level": False}},
        train={"num_steps": 40, "schedule_steps": 40, "eval_every": 4},
        search={"num_samples": 2, "space": {"lr": {"log_uniform": [5e-4, 2e-3]}}},
        scheduler={"kind": "none"},
        confirm={"top_k": 1, "seeds": [0]},
        ray={},
    )
    spec_path = write_spec(tmp_path, spec)
    root = tmp_path / "results" / "tiny"
    experiment = root / "ray" / "search-source_only"
    tag = f"node-kill-{os.getpid()}-{time.time_ns()}"
    driver = start_study(spec_path, tmp_path / "results", tag, "--address", cluster.address)
    try:
        wait_for(
            lambda: driver.poll() is not None or any(
                row.get("node_ip") == SECOND and row["step"] >= 8
                for rows in rows_of(experiment).values() for row in rows
            ),
            what="a trial with a checkpoint on the second node",
        )  # fmt: skip
        assert driver.poll() is None, "the study ended before the node was killed"
        cluster.kill_second()
        cluster.start_second()
        _, err = driver.communicate(timeout=600)
    finally:
        kill_tagged(tag)
    assert driver.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert any(
        line.endswith("Ray retries it from its last checkpoint") for line in err.splitlines()
    )
    check_study(root, spec)
    resumed = []
    for rows in rows_of(experiment).values():
        assert rows[-1]["step"] == 40
        restarts = [
            r["step"] for i, r in enumerate(rows) if i and r["iterations_since_restore"] == 1
        ]
        resumed += restarts
    assert resumed and min(resumed) > 4, f"retried from steps {resumed}, not from a checkpoint"
