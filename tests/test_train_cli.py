"""`python -m adaptseg.train`: files written, resume, refusals, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from conftest import TINY

from adaptseg.train import main


def write_config(tmp_path, **overrides):
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                **TINY,
                "num_steps": 4,
                "eval_every": 2,
                "checkpoint_every": 2,
                "log_every": 1,
                **overrides,
            }
        )
    )
    return path


def records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_config_metrics_and_checkpoints(tmp_path):
    out = tmp_path / "run"
    assert main(["--config", str(write_config(tmp_path)), "--out", str(out)]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["backbone"] == "small"
    rows = records(out)
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [2, 4]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_00000002.pt", "step_00000004.pt",
    ]  # fmt: skip


def final_weights(out) -> dict:
    from adaptseg.checkpoint import load_latest

    state, _ = load_latest(out / "checkpoints")
    return state["model"]


def same_weights(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_rerun_resumes_and_extends_without_redoing_a_step(tmp_path):
    config = str(write_config(tmp_path))
    straight = tmp_path / "straight"
    assert main(["--config", config, "--out", str(straight), "--set", "num_steps=6"]) == 0
    out = tmp_path / "run"
    assert main(["--config", config, "--out", str(out)]) == 0
    first = (out / "metrics.jsonl").read_text()
    assert main(["--config", config, "--out", str(out)]) == 0
    assert (out / "metrics.jsonl").read_text() == first, "a finished run must not train again"
    assert main(["--config", config, "--out", str(out), "--set", "num_steps=6"]) == 0
    text = (out / "metrics.jsonl").read_text()
    assert text.startswith(first), "the records of steps 1-4 were rewritten: a restart"
    assert [r["step"] for r in records(out) if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert same_weights(final_weights(out), final_weights(straight))


def test_records_after_the_resumed_checkpoint_are_dropped_and_redone(tmp_path):
    config = str(write_config(tmp_path))
    straight, out = tmp_path / "straight", tmp_path / "run"
    assert main(["--config", config, "--out", str(straight)]) == 0
    assert main(["--config", config, "--out", str(out)]) == 0
    (out / "checkpoints" / "step_00000004.pt").unlink()  # as if killed before that checkpoint
    assert main(["--config", config, "--out", str(out)]) == 0
    rows = records(out)
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [2, 4]
    assert same_weights(final_weights(out), final_weights(straight))


def test_a_rerun_after_training_further_says_so_and_keeps_the_config_true(tmp_path, capsys):
    config = str(write_config(tmp_path))
    out = tmp_path / "run"
    assert main(["--config", config, "--out", str(out), "--set", "num_steps=6"]) == 0
    capsys.readouterr()
    assert main(["--config", config, "--out", str(out)]) == 0
    assert "step_00000006.pt is at step 6 (num_steps 4); nothing to do" in capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["num_steps"] == 6


@pytest.mark.parametrize(
    ("key", "value"),
    [("num_steps", 6), ("eval_every", 1), ("checkpoint_every", 1), ("keep_checkpoints", 5),
     ("log_every", 2), ("num_workers", 1)],
)  # fmt: skip
def test_every_loop_key_may_change_between_runs(tmp_path, key, value):
    config = str(write_config(tmp_path))
    out = tmp_path / "run"
    assert main(["--config", config, "--out", str(out), "--set", "num_steps=2"]) == 0
    assert main(["--config", config, "--out", str(out), "--set", f"{key}={value}"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())[key] == value


@pytest.mark.parametrize(("key", "value"), [("lr", 0.5), ("seed", 7), ("ndf", 16),
                                            ("multi_level", False)])  # fmt: skip
def test_a_changed_training_key_is_refused(tmp_path, capsys, key, value):
    out = tmp_path / "run"
    config = str(write_config(tmp_path))
    assert main(["--config", config, "--out", str(out)]) == 0
    assert main(["--config", config, "--out", str(out), "--set", f"{key}={value}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"config.yaml: this run directory was started with other values for {key}" in err


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "adaptseg.train", *args], capture_output=True, text=True,
        timeout=300, **kwargs,
    )  # fmt: skip


def test_a_diverging_run_exits_1_naming_the_step_and_losses(tmp_path):
    config = str(write_config(tmp_path, optimizer="sgd", lr=1e8, momentum=0.0, num_steps=40,
                              eval_every=40, checkpoint_every=40, backbone_update="once"))  # fmt: skip
    result = cli("--config", config, "--out", str(tmp_path / "run"))
    assert result.returncode == 1, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("diverged: loss became NaN or infinite at step ") and "loss_seg" in line


@pytest.mark.slow
def test_ctrl_c_exits_130_and_the_rerun_ends_where_an_uninterrupted_run_does(tmp_path):
    import signal
    import time

    config = str(write_config(tmp_path, num_steps=60, eval_every=20, checkpoint_every=20,
                              log_every=10))  # fmt: skip
    straight, out = tmp_path / "straight", tmp_path / "run"
    assert cli("--config", config, "--out", str(straight)).returncode == 0
    driver = subprocess.Popen(
        [sys.executable, "-m", "adaptseg.train", "--config", config, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not (out / "checkpoints" / "step_00000020.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, err[-2000:]
    assert "interrupted; a checkpoint was saved. Resume with: python -m adaptseg.train" in err
    stopped = final_weights(out)
    assert cli("--config", config, "--out", str(out)).returncode == 0
    assert same_weights(final_weights(out), final_weights(straight))
    assert not same_weights(stopped, final_weights(straight))


def test_bad_config_exits_2_with_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    config = str(write_config(tmp_path, lambda_adv_mian=0.1))
    result = subprocess.run(
        [sys.executable, "-m", "adaptseg.train", "--config", config, "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {config}: unknown key `lambda_adv_mian` (did you mean `lambda_adv_main`?)"
    )
    assert not out.exists()


def test_truncated_only_checkpoint_exits_2_with_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    config = str(write_config(tmp_path))
    assert (
        main(
            [
                "--config",
                config,
                "--out",
                str(out),
                "--set",
                "num_steps=2",
                "--set",
                "eval_every=2",
            ]
        )
        == 0
    )
    for path in (out / "checkpoints").iterdir():
        path.write_bytes(path.read_bytes()[:100])
    capsys.readouterr()
    assert main(["--config", config, "--out", str(out), "--set", "num_steps=4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        f"error: {out / 'checkpoints'}: none of the 1 checkpoints is readable"
    )
