"""Helpers for tests that run real Ray studies: tiny specs, subprocess runs on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

LOOPBACK = "127.0.0.2"  # Ray rewrites 127.0.0.1 to the outward address; other loopbacks stay


def ray_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "RAY_AUTH_MODE": "disabled",  # tests only: the harness leaves Ray's token auth on
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
    })  # fmt: skip
    return env


def ray_cli() -> list[str]:
    """The ``ray`` command of the interpreter running the tests: the script installed beside it,
    else the same entry point run by the interpreter. Found by path, not by name, so the tests
    also pass as ``.venv/bin/python -m pytest`` without the environment activated (IDEs, cron)."""
    beside = Path(sys.executable).parent / "ray"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [
        sys.executable,
        "-c",
        "import sys; from ray.scripts.scripts import main; sys.exit(main())",
    ]


def tiny_spec(bench: Path, **sections) -> dict:
    spec = {
        "name": "tiny",
        "data": {"synthetic": {"root": str(bench), "seed": 0, "size": "64x128", "counts": [24, 24, 16]}},
        "train": {
            "backbone": "small", "ndf": 8, "optimizer": "adam",
            "input_size_source": "64x128", "input_size_target": "64x128",
            "num_steps": 6, "schedule_steps": 6, "eval_every": 2, "num_workers": 0,
        },
        "arms": {
            "source_only": {"use_target": False, "multi_level": False},
            "single_level": {"multi_level": False},
        },
        "search": {
            "num_samples": 3,
            "sampler": {"kind": "tpe", "seed": 0, "n_startup_trials": 1},
            "space": {
                "lambda_adv_main": {"log_uniform": [1e-3, 1e-2], "arms": ["single_level"]},
                "lr": {"log_uniform": [5e-4, 2e-3]},
            },
        },
        "scheduler": {"kind": "asha", "grace_period": 2, "reduction_factor": 2},
        "confirm": {"top_k": 1, "seeds": [0, 1]},
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2},
        "ray": {"num_cpus": 2},
    }  # fmt: skip
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict) and key != "arms":
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def record_finished_trial(study_dir: Path, arm: str = "source_only") -> None:
    """A Ray experiment snapshot holding one finished trial: a study with results to protect
    (a study where no trial has finished takes any change and starts over)."""
    import json

    experiment = study_dir / "ray" / f"search-{arm}"
    experiment.mkdir(parents=True, exist_ok=True)
    trial = {"trial_id": "done", "status": "TERMINATED", "config": {"arm": arm},
             "relative_logdir": "done"}  # fmt: skip
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": [[json.dumps(trial), json.dumps({})]]})
    )


def write_spec(directory: Path, spec: dict) -> Path:
    path = directory / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def study_command(spec_path: Path, results: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "study.run", str(spec_path), "--results", str(results),
        "--node-ip-address", LOOPBACK, *extra,
    ]  # fmt: skip


def run_study(spec_path: Path, results: Path, *extra: str, timeout: int = 600):
    return subprocess.run(
        study_command(spec_path, results, *extra),
        capture_output=True, text=True, timeout=timeout, env=ray_env(), cwd=spec_path.parent,
    )  # fmt: skip


def start_study(
    spec_path: Path, results: Path, tag: str, *extra: str, env: dict | None = None, **popen
) -> subprocess.Popen:
    """The study command in the background, every process it starts carrying ``tag`` (stop
    them with ``kill_tagged``); stdout is dropped and stderr kept unless ``popen`` says;
    ``env`` adds variables (an S3 endpoint, credentials)."""
    options = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True,
               "cwd": spec_path.parent, **popen}  # fmt: skip
    return subprocess.Popen(
        study_command(spec_path, results, *extra), env={**tagged_env(tag), **(env or {})},
        **options,
    )  # fmt: skip


def wait_for(condition, timeout: float = 300, what: str = "the moment") -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} never came")


TAG_VARIABLE = "ADAPTSEG_TEST_TAG"


def tagged_env(tag: str) -> dict[str, str]:
    """``ray_env()`` plus a tag that every process the command starts inherits (Ray's raylet
    and workers included), so a test can stop exactly what it started."""
    return {**ray_env(), TAG_VARIABLE: tag}


def tagged_pids(tag: str) -> set[int]:
    """Processes whose environment carries ``tag`` (see ``tagged_env``)."""
    marker = f"{TAG_VARIABLE}={tag}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if marker in handle.read().split(b"\0"):
                    found.add(int(entry))
        except OSError:
            continue
    return found


def kill_tagged(tag: str, rounds: int = 3) -> None:
    """SIGKILL every process carrying ``tag`` (repeated: a dying raylet may still spawn)."""
    import signal
    import time

    for _ in range(rounds):
        pids = tagged_pids(tag)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


def resume_checkpoints(experiment: Path) -> dict[str, str | None]:
    """Trial id -> the checkpoint folder a restore of ``experiment`` resumes it from (None: from
    the start), by its newest snapshot. The checkpoint manager can lag the trial's last
    reported result, so that result's ``checkpoint_dir_name`` is not the answer."""
    import json

    from study.ray_internals.snapshot import checkpoint_manager, newest_state, resume_path

    out: dict[str, str | None] = {}
    for trial, runtime in (newest_state(experiment) or {}).get("trial_data", []):
        trial_id = json.loads(trial)["trial_id"]
        out[trial_id] = resume_path(checkpoint_manager(json.loads(runtime)))
    return out
