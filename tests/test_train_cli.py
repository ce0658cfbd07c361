"""`python -m adaptseg.train`: files written, resume, refusals, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_rerun_resumes_and_extends(tmp_path):
    out = tmp_path / "run"
    config = str(write_config(tmp_path))
    assert main(["--config", config, "--out", str(out)]) == 0
    assert main(["--config", config, "--out", str(out)]) == 0
    assert len(records(out)) == 6, "a finished run must not train again"
    assert main(["--config", config, "--out", str(out), "--set", "num_steps=6"]) == 0
    steps = [r["step"] for r in records(out) if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_changed_training_key_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    config = str(write_config(tmp_path))
    assert main(["--config", config, "--out", str(out)]) == 0
    assert main(["--config", config, "--out", str(out), "--set", "lr=0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "config.yaml: this run directory was started with other values for lr" in err


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
