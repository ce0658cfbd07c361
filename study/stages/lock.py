"""One driver per study: a lock file in the study folder, on a local or a shared filesystem.

The same command started twice (a second terminal, a job array, a retried scheduler job)
would train the same trials twice and end with a false exit code. The first driver creates
``.driver.lock`` with ``O_EXCL`` (atomic on local filesystems and on NFS v3 and later) holding
its host, PID, process start time and start date, and renews its modification time every
``HEARTBEAT_S`` seconds. A second driver exits 2 naming the first. A lock whose driver is
gone (kill -9, a lost node) is taken over, saying so: on the same host when its process no
longer exists (or is another process under the same PID), on another host when it was not
renewed for ``STALE_S`` seconds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

from study.errors import StudyLocked

LOCK_FILE = ".driver.lock"
HEARTBEAT_S = 30.0
STALE_S = 300.0


def _process_start(pid: int) -> str | None:
    """The kernel's start time of a process (Linux), to tell a reused PID from the driver."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive_here(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: assume it is the driver
    started = _process_start(pid)
    return started is None or holder.get("process_start") in (None, started)


def describe(holder: dict[str, Any]) -> str:
    return (
        f"host {holder.get('host', '?')}, PID {holder.get('pid', '?')}, started "
        f"{holder.get('started', '?')}"
    )


class StudyLock:
    """``with StudyLock(root) as lock: ...``; ``lock.note`` says when a stale lock was taken."""

    def __init__(self, root: Path, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.path = root / LOCK_FILE
        self.heartbeat_s = heartbeat_s
        self.token = uuid.uuid4().hex
        self.note: str | None = None
        self.created = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or damaged: judged by its age alone

    def live_holder(self) -> dict[str, Any] | None:
        """The driver holding the lock, if it is still there."""
        holder = self.holder()
        if holder is None:
            return None
        try:
            age = dt.datetime.now().timestamp() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        if holder.get("host") == socket.gethostname():
            return holder if _alive_here(holder) else None
        return holder if age < STALE_S else None

    def acquire(self) -> StudyLock:
        self.created = not self.path.parent.exists()  # removed again if left empty
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_start": _process_start(os.getpid()),
            "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "token": self.token,
        }
        for _ in range(3):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.live_holder()
                if holder is not None:
                    raise StudyLocked(
                        f"{self.path.parent}: another driver is running this study "
                        f"({describe(holder)}); wait for it to end or stop it"
                    ) from None
                gone = self.holder() or {}
                with contextlib.suppress(FileNotFoundError):  # another driver took it first
                    self.path.rename(self.path.with_name(f"{LOCK_FILE}.stale-{self.token}"))
                    self.path.with_name(f"{LOCK_FILE}.stale-{self.token}").unlink()
                    self.note = f"took over the lock of a driver that is gone ({describe(gone)})"
                continue
            with os.fdopen(descriptor, "w") as handle:
                json.dump(record, handle)
            self._thread = threading.Thread(target=self._beat, daemon=True, name="study-lock")
            self._thread.start()
            return self
        raise StudyLocked(f"{self.path.parent}: could not take the study's lock")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if (self.holder() or {}).get("token") != self.token:
                return  # taken over (we were judged gone): stop renewing it
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        if (self.holder() or {}).get("token") == self.token:
            with contextlib.suppress(OSError):
                self.path.unlink()
        if self.created:  # a run refused before it wrote anything leaves nothing behind
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()

    def __enter__(self) -> StudyLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
