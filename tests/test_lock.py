"""One driver per study: a second driver on the same study exits 2 naming the first; a lock
whose driver is gone is taken over, saying so."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from study_helpers import (
    kill_tagged,
    start_study,
    study_command,
    tagged_env,
    tiny_spec,
    wait_for,
    write_spec,
)
from test_study import bench  # noqa: F401  (the shared synthetic benchmark fixture)

from study.errors import StudyLocked
from study.stages.lock import LOCK_FILE, STALE_S, StudyLock


def test_a_held_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    with StudyLock(tmp_path) as first:
        holder = first.holder()
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(StudyLocked) as raised:
            StudyLock(tmp_path).acquire()
        message = str(raised.value)
        assert f"PID {os.getpid()}" in message and socket.gethostname() in message
        assert holder["started"] in message
    assert not (tmp_path / LOCK_FILE).exists()  # released
    with StudyLock(tmp_path) as again:
        assert again.note is None


def test_the_lock_of_a_driver_that_died_is_taken_over_saying_so(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)
    record = {"host": socket.gethostname(), "pid": pid, "started": "2026-01-01T00:00:00+00:00"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(record))
    with StudyLock(tmp_path) as lock:
        assert lock.note == (
            f"took over the lock of a driver that is gone (host {socket.gethostname()}, "
            f"PID {pid}, started 2026-01-01T00:00:00+00:00)"
        )
        assert lock.holder()["pid"] == os.getpid()


def test_a_reused_pid_is_not_the_driver(tmp_path):
    record = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": "1",
              "started": "2026-01-01T00:00:00+00:00"}  # fmt: skip
    (tmp_path / LOCK_FILE).write_text(json.dumps(record))
    with StudyLock(tmp_path) as lock:
        assert lock.note is not None


def test_another_hosts_lock_holds_while_renewed_and_is_taken_when_stale(tmp_path):
    record = {"host": "elsewhere.example", "pid": 1, "started": "2026-01-01T00:00:00+00:00"}
    path = tmp_path / LOCK_FILE
    path.write_text(json.dumps(record))
    with pytest.raises(StudyLocked, match="host elsewhere.example, PID 1"):
        StudyLock(tmp_path).acquire()
    old = time.time() - STALE_S - 5
    os.utime(path, (old, old))
    with StudyLock(tmp_path) as lock:
        assert lock.note is not None and "elsewhere.example" in lock.note


def test_the_heartbeat_renews_the_lock(tmp_path):
    with StudyLock(tmp_path, heartbeat_s=0.05) as lock:
        os.utime(lock.path, (1, 1))
        time.sleep(0.5)
        assert lock.path.stat().st_mtime > 1000


@pytest.mark.slow
@pytest.mark.faults
def test_a_second_driver_on_the_same_study_exits_2_naming_the_first(tmp_path, bench):  # noqa: F811
    spec_path = write_spec(tmp_path, tiny_spec(bench))
    results, root = tmp_path / "results", tmp_path / "results" / "tiny"
    tags = [f"lock-{os.getpid()}-{time.time_ns()}-{i}" for i in range(2)]
    first = start_study(spec_path, results, tags[0])
    try:
        wait_for(lambda: (root / LOCK_FILE).exists(), timeout=120, what="the first driver's lock")
        second = subprocess.run(
            study_command(spec_path, results), env=tagged_env(tags[1]), cwd=tmp_path,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 2
        (line,) = second.stderr.strip().splitlines()
        assert line.startswith(f"error: {root}: another driver is running this study (host ")
        assert f"PID {first.pid}, started " in line
        fresh = subprocess.run(  # never moves a running study aside
            study_command(spec_path, results, "--fresh"), env=tagged_env(tags[1]),
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert fresh.returncode == 2, fresh.stderr[-3000:]
        assert "another driver is running this study" in fresh.stderr
        assert not list(results.glob("tiny.old-*")) and (root / "study.yaml").exists()
        _, err = first.communicate(timeout=600)
    finally:
        for tag in tags:
            kill_tagged(tag)
    assert first.returncode == 0, err[-3000:]
    assert not (root / LOCK_FILE).exists()
