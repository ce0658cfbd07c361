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
from study_helpers import kill_tagged, ray_cli, run_study, tagged_env, tiny_spec, write_spec
from test_study import bench  # noqa: F401  (the shared synthetic benchmark fixture)

HEAD, SECOND = "127.0.0.2", "127.0.0.3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HEAD, 0))
        return sock.getsockname()[1]


@pytest.fixture
def cluster():
    """A head at 127.0.0.2 and a second node at 127.0.0.3, one CPU each; stopped by killing the
    processes that carry this fixture's tag (never `ray stop`, which would end other Rays)."""
    tag = f"cluster-{os.getpid()}-{time.time_ns()}"
    port = free_port()
    common = ["--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run(
            [*ray_cli(), "start", "--head", f"--node-ip-address={HEAD}", f"--port={port}",
             "--include-dashboard=false", *common],
            check=True, env=tagged_env(tag), capture_output=True, timeout=120,
        )  # fmt: skip
        subprocess.run(
            [*ray_cli(), "start", f"--address={HEAD}:{port}", f"--node-ip-address={SECOND}", *common],
            check=True, env=tagged_env(tag), capture_output=True, timeout=120,
        )  # fmt: skip
        yield f"{HEAD}:{port}"
    finally:
        kill_tagged(tag)
        marker = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if marker.is_file() and marker.read_text().strip() == f"{HEAD}:{port}":
            marker.unlink()


@pytest.mark.slow
def test_study_joins_a_two_node_cluster_and_uses_both_nodes(tmp_path, bench, cluster):  # noqa: F811
    spec = tiny_spec(
        bench,
        arms={"source_only": {"use_target": False, "multi_level": False}},
        search={"num_samples": 2, "space": {"lr": {"log_uniform": [5e-4, 2e-3]}}},
        scheduler={"kind": "none"},
        confirm={"top_k": 0, "seeds": [0]},
        ray={},
    )
    spec_path = write_spec(tmp_path, spec)
    result = run_study(spec_path, tmp_path / "results", "--address", cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = tmp_path / "results" / "tiny" / "ray" / "search-source_only"
    nodes = set()
    for trial in experiment.iterdir():
        if (trial / "result.json").is_file():
            rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
            assert rows[-1]["step"] == 6
            nodes |= {row["node_ip"] for row in rows}
    assert nodes == {HEAD, SECOND}
