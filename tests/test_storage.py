"""A study whose Ray experiments live behind an S3 URI (``storage:``), against a real
S3-compatible server (moto's, started here on a loopback address): it gets its tables and its
report like a local study, and resumes after kill -9 of its driver."""

from __future__ import annotations

import json
import subprocess
import uuid

import pandas as pd
import pytest
from invariants import check_study
from study_helpers import (
    LOOPBACK,
    kill_tagged,
    ray_env,
    start_study,
    study_command,
    tiny_spec,
    wait_for,
    write_spec,
)
from test_study import bench  # noqa: F401  (the shared synthetic benchmark fixture)

from study.records.folder import MIRROR, StudyPaths

pytestmark = [pytest.mark.slow, pytest.mark.faults]
BUCKET = "studies"


@pytest.fixture
def s3(monkeypatch):
    """An S3 server on loopback and the environment that reaches it (Ray's workers inherit it)."""
    boto3 = pytest.importorskip("boto3")
    server_module = pytest.importorskip("moto.server")
    server = server_module.ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield env, client
    server.stop()


def keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def s3_spec(bench_root) -> dict:
    return tiny_spec(
        bench_root, search={"num_samples": 2}, confirm={"top_k": 1, "seeds": [0, 1]},
        storage=f"s3://{BUCKET}/runs", checkpoint={"sync_every_s": 2},
    )  # fmt: skip


def run(spec_path, results, env, *extra, timeout=600):
    return subprocess.run(
        study_command(spec_path, results, *extra), capture_output=True, text=True,
        timeout=timeout, env={**ray_env(), **env}, cwd=spec_path.parent,
    )  # fmt: skip


def test_a_study_on_an_s3_uri_gets_tables_a_report_and_resumes_after_kill_9(
    tmp_path,
    bench,  # noqa: F811
    s3,
):
    env, client = s3
    spec = s3_spec(bench)
    spec_path = write_spec(tmp_path, spec)
    results = tmp_path / "results"
    root = results / "tiny"

    tag = f"s3-{uuid.uuid4().hex[:8]}"
    driver = start_study(spec_path, results, tag, env=env, start_new_session=True)
    try:  # kill -9 once Ray has uploaded a snapshot and a checkpoint of the first search
        prefix = "runs/tiny/search-source_only/"
        wait_for(
            lambda: driver.poll() is not None or (
                any("experiment_state-" in k for k in keys(client, prefix))
                and any("/checkpoint_" in k for k in keys(client, prefix))
            ),
            what="an uploaded snapshot",
        )  # fmt: skip
    finally:
        kill_tagged(tag)
        driver.wait(timeout=60)  # reaped: its lock is then a dead driver's
    assert driver.returncode == -9, driver.stderr.read()[-3000:]

    again = run(spec_path, results, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not (root / "ray").exists(), "Ray's experiments were written locally"
    assert (root / MIRROR).is_dir() and not list((root / MIRROR).rglob("checkpoint_*"))
    assert any("/checkpoint_" in k for k in keys(client, "runs/tiny/confirm/"))
    counts = check_study(root, spec)
    assert counts["trials"] == 2 * 2 + 2 * 2
    assert (root / "report.html").is_file() and (root / "summary.json").is_file()
    summary = json.loads((root / "summary.json").read_text())
    assert set(summary["arms"]) == {"source_only", "single_level"} and summary["comparisons"]
    assert "single_level" in again.stdout and "report:" in again.stdout  # the ablation table

    # The export command reaches the experiments through the study's saved storage.
    (root / "tables" / "trials.parquet").unlink()
    export = subprocess.run(
        ["python", "-m", "study.export", str(root)], capture_output=True, text=True,
        timeout=300, env={**ray_env(), **env},
    )  # fmt: skip
    assert export.returncode == 0, export.stderr[-3000:]
    assert len(pd.read_parquet(root / "tables" / "trials.parquet")) == 8
    assert StudyPaths.of_study(root).experiments == f"s3://{BUCKET}/runs/tiny"

    # Growing it runs only what is new, from the records behind the URI.
    grown = run(spec_path, results, env, "--set", "search.num_samples=3")
    assert grown.returncode == 0, grown.stderr[-3000:]
    spec["search"]["num_samples"] = 3
    check_study(root, spec)
