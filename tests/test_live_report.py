"""The report exists while a study runs, says where it stands, and says "Complete" at the end."""

from __future__ import annotations

import os
import subprocess
import time

import pandas as pd
import pytest
from study_helpers import kill_tagged, start_study, tiny_spec, wait_for, write_spec
from test_study import bench  # noqa: F401  (the shared synthetic benchmark fixture)


def status_section(html: str) -> str:
    """The report's status section alone (the whole page embeds plotly.js, megabytes of it)."""
    return html.split("<h2>Status</h2>", 1)[1].split("<h2>", 1)[0]


@pytest.mark.slow
def test_the_report_is_live_while_the_study_runs_and_complete_at_the_end(tmp_path, bench):  # noqa: F811
    spec_path = write_spec(tmp_path, tiny_spec(bench))
    results, root = tmp_path / "results", tmp_path / "results" / "tiny"
    report = root / "report.html"
    tag = f"live-{os.getpid()}-{time.time_ns()}"
    driver = start_study(spec_path, results, tag, stdout=subprocess.PIPE)
    try:
        wait_for(lambda: report.exists() or driver.poll() is not None, what="the report")
        assert report.exists(), "no report while the study ran"
        during = status_section(report.read_text())
        assert driver.poll() is None and not (root / "summary.json").exists(), "it had ended"
        assert during.startswith("<p><b>Running</b>: search source_only"), during
        status = pd.read_parquet(root / "tables" / "status.parquet")
        assert status["state"].tolist() == ["running"]
        trials = pd.read_parquet(root / "tables" / "trials.parquet")
        assert (trials["status"] != "running").any(), "exported before a trial finished"
        _, err = driver.communicate(timeout=600)
    finally:
        kill_tagged(tag)
    assert driver.returncode == 0, err[-3000:]
    html = report.read_text()
    after = status_section(html)
    assert after.startswith("<p><b>Complete.</b>"), after
    assert pd.read_parquet(root / "tables" / "status.parquet")["state"].tolist() == ["complete"]
    assert "<td>single_level &minus; source_only</td>" in html.split("<h2>", 3)[2]


def test_the_live_report_is_rebuilt_at_most_once_a_period_and_never_stops_the_study(
    tmp_path, monkeypatch, caplog
):
    from types import SimpleNamespace

    from study.records.folder import StudyPaths
    from study.tables import live

    calls = []
    monkeypatch.setattr(live, "refresh", lambda *args: calls.append(args))
    clock = [1000.0]
    monkeypatch.setattr(live.time, "monotonic", lambda: clock[0])
    progress = SimpleNamespace(stage="search a", seconds_left=lambda: 42.0)
    paths = StudyPaths(tmp_path)
    report = live.LiveReport(paths, "search-a", progress, every_s=120)
    first, second = (
        SimpleNamespace(trial_id="t1", status="RUNNING"),
        SimpleNamespace(trial_id="t2", status="RUNNING"),
    )
    report.on_trial_complete(0, [first, second], first)
    clock[0] += 119
    report.on_trial_error(0, [first, second], second)  # within the period: not rebuilt
    assert calls == [(paths, "running", "search a", 42.0,
                      {"search-a": {"t1": "TERMINATED", "t2": "RUNNING"}})]  # fmt: skip
    clock[0] += 2
    report.on_trial_error(0, [first, second], second)
    assert calls[-1][-1] == {"search-a": {"t1": "RUNNING", "t2": "ERROR"}} and len(calls) == 2

    def broken(*args):
        raise OSError("disk on fire")

    monkeypatch.setattr(live, "refresh", broken)
    clock[0] += 121
    report.on_trial_complete(0, [first], first)  # a warning, never an exception
    assert "the live report could not be rebuilt: disk on fire" in caplog.text
