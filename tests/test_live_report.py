"""The report exists while a study runs, says where it stands, and says "Complete" at the end."""

from __future__ import annotations

import os
import subprocess
import time

import pandas as pd
import pytest
from study_helpers import kill_tagged, study_command, tagged_env, tiny_spec, write_spec
from test_study import bench  # noqa: F401  (the shared synthetic benchmark fixture)


@pytest.mark.slow
def test_the_report_is_live_while_the_study_runs_and_complete_at_the_end(tmp_path, bench):  # noqa: F811
    spec_path = write_spec(tmp_path, tiny_spec(bench))
    results, root = tmp_path / "results", tmp_path / "results" / "tiny"
    report = root / "report.html"
    tag = f"live-{os.getpid()}-{time.time_ns()}"
    driver = subprocess.Popen(
        study_command(spec_path, results), env=tagged_env(tag), cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 300
        while not report.exists() and driver.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert report.exists(), "no report while the study ran"
        during = report.read_text()
        assert driver.poll() is None and not (root / "summary.json").exists(), "it had ended"
        assert "<h2>Status</h2>" in during and "<b>Running</b>: search source_only" in during
        status = pd.read_parquet(root / "tables" / "status.parquet")
        assert status["state"].tolist() == ["running"]
        trials = pd.read_parquet(root / "tables" / "trials.parquet")
        assert (trials["status"] != "running").any(), "exported before a trial finished"
        _, err = driver.communicate(timeout=600)
    finally:
        kill_tagged(tag)
    assert driver.returncode == 0, err[-3000:]
    after = report.read_text()
    assert "<b>Complete.</b>" in after and "Running" not in after
    assert pd.read_parquet(root / "tables" / "status.parquet")["state"].tolist() == ["complete"]
    assert "<td>single_level &minus; source_only</td>" in after
