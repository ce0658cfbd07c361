"""The study's Optuna database opens in optuna-dashboard (the `dashboard` extra), served on a
loopback address and stopped by the process id the test started."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request

import optuna
import pytest

HOST = "127.0.0.2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(
    shutil.which("optuna-dashboard") is None, reason="pip install -e '.[dashboard]'"
)
def test_the_study_database_opens_in_optuna_dashboard(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    for arm in ("source_only", "single_level"):  # as study.search names them: <study>-<arm>
        study = optuna.create_study(study_name=f"tiny-{arm}", storage=url, direction="maximize")
        study.optimize(lambda trial: trial.suggest_float("lr", 1e-4, 1e-2, log=True), n_trials=2)
    port = free_port()
    server = subprocess.Popen(
        ["optuna-dashboard", url, "--host", HOST, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline, body = time.time() + 60, None
        while body is None and time.time() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/api/studies", timeout=2) as r:
                    body = json.loads(r.read())
            except OSError:
                time.sleep(0.3)
        assert body is not None, server.stderr.read() if server.poll() is not None else "no answer"
        names = sorted(s["study_name"] for s in body["study_summaries"])
        assert names == ["tiny-single_level", "tiny-source_only"]
    finally:
        server.kill()
        server.wait(timeout=30)
