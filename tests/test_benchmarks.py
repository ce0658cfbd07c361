"""Each benchmark script at its smallest size, so none of them can rot (figures: docs/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from study_helpers import LOOPBACK, ray_env

REPO = Path(__file__).parents[1]


def run_benchmark(script: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "result.json"
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args, "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=ray_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_step_benchmark_compares_faithful_and_fast(tmp_path):
    result = run_benchmark("step.py", tmp_path, "--backbone", "small", "--size", "64x128",
                           "--levels", "multi,single", "--steps", "1", "--warmup", "0")  # fmt: skip
    assert [(r["levels"], r["mode"]) for r in result["rows"]] == [
        ("multi", "faithful"),
        ("multi", "fast"),
        ("single", "faithful"),
        ("single", "fast"),
    ]
    assert all(r["tflop_per_iteration"] > 0 and r["peak_memory_gb"] > 0 for r in result["rows"])
    assert len(result["ratios"]) == 2 and all(
        r["speedup_fast_over_faithful"] > 0 for r in result["ratios"]
    )
    multi, single = result["rows"][0], result["rows"][2]
    assert single["tflop_per_iteration"] < multi["tflop_per_iteration"]  # no aux head, no D_aux


@pytest.mark.slow
def test_loader_benchmark_sets_the_loader_against_the_step(tmp_path):
    step = tmp_path / "step.json"
    step.write_text(
        json.dumps(
            {
                "rows": [
                    {
                        "backbone": "small",
                        "size": "64x128",
                        "levels": "multi",
                        "mode": "fast",
                        "device": "cpu",
                        "seconds_per_iteration": 0.5,
                        "iterations_per_second": 2.0,
                    }
                ]
            }
        )
    )
    result = run_benchmark("loader.py", tmp_path, "--file-size", "64x128", "--images", "3",
                           "--draws", "4", "--workers", "0", "--root", str(tmp_path / "data"),
                           "--step-json", str(step))  # fmt: skip
    assert {r["stream"] for r in result["rows"]} == {
        "source_gta5_720x1280",
        "target_cityscapes_512x1024",
    }
    assert all(r["images_per_second"] > 0 for r in result["rows"])
    assert set(result["loader_over_step"]) == {
        "source_gta5_720x1280/workers=0",
        "target_cityscapes_512x1024/workers=0",
    }


@pytest.mark.slow
def test_overhead_benchmark_runs_a_study_and_reports_the_ratio(tmp_path):
    result = run_benchmark("overhead.py", tmp_path, "--trial-seconds", "2", "--trials", "3",
                           "--bench", str(tmp_path / "data"), "--node-ip-address", LOOPBACK)  # fmt: skip
    assert result["trials"] == 3 and result["overhead_ratio"] > 1.0
    assert len(result["warm_trial_start_latency_seconds"]) == 1


@pytest.mark.slow
def test_search_efficiency_benchmark_compares_both_searches(tmp_path):
    result = run_benchmark("search_efficiency.py", tmp_path, "--trials", "2", "--steps", "8",
                           "--seeds", "0", "--bench", str(tmp_path / "data"),
                           "--node-ip-address", LOOPBACK)  # fmt: skip
    (seed,) = result["seeds"]
    assert seed["random"]["trials"] == seed["asha_tpe"]["trials"] == 2
    assert seed["random"]["total_steps"] == 16
    assert seed["random"]["steps_to_random_best"] <= 16


@pytest.mark.slow
def test_report_scale_benchmark(tmp_path):
    result = run_benchmark("report_scale.py", tmp_path, "--trials", "8", "--evals", "3")
    assert result["trials"] >= 8 and result["html_mb"] > 0


@pytest.mark.slow
def test_fast_miou_benchmark_trains_both_modes(tmp_path):
    result = run_benchmark("fast_miou.py", tmp_path, str(tmp_path / "data"), "--size", "64x128",
                           "--counts", "8,8,4", "--steps", "2", "--seeds", "0,1")  # fmt: skip
    assert sorted((r["mode"], r["seed"]) for r in result["runs"]) == [
        ("faithful", 0),
        ("faithful", 1),
        ("fast", 0),
        ("fast", 1),
    ]
    assert result["fast_settings"]["amp"] == "auto"  # bf16 only where the device computes it


@pytest.mark.slow
def test_gap_tool_trains_every_arm_and_gives_a_verdict(tmp_path):
    from adaptseg.data.synthetic import generate

    generate(tmp_path / "bench", seed=0, size=(64, 128), counts=(8, 8, 8))
    result = run_benchmark("gap.py", tmp_path, str(tmp_path / "bench"), "--steps", "2",
                           "--seeds", "0", "--workers", "1")  # fmt: skip
    assert sorted(r["arm"] for r in result["runs"]) == [
        "bn_control", "oracle", "single_level", "source_only",
    ]  # fmt: skip
    assert all(0.0 <= r["miou"] <= 1.0 for r in result["runs"])
    assert set(result["mean"]) == {"bn_control", "oracle", "single_level", "source_only"}
    assert isinstance(result["adaptable"], bool) and result["seed_spread"] == 0.0


@pytest.mark.slow
def test_quickstart_answer_reruns_the_confirm_stage_on_more_seeds(tmp_path):
    import pandas as pd
    import yaml

    from adaptseg.config import build_config

    study = tmp_path / "study"
    (study / "best").mkdir(parents=True)
    (study / "tables").mkdir()
    tiny = {"source": "random", "target": "random", "backbone": "small", "ndf": 8,
            "input_size_source": "32x64", "input_size_target": "32x64", "num_steps": 2,
            "schedule_steps": 2, "eval_every": 1, "num_workers": 0, "eval_limit": 2,
            "optimizer": "adam", "multi_level": False}  # fmt: skip
    for arm, extra in (("adapted", {}), ("control", {"lambda_adv_main": 0.0})):
        config = build_config({**tiny, **extra}, arm).to_dict()
        (study / "best" / f"{arm}.yaml").write_text(yaml.safe_dump(config))
    pd.DataFrame([{"study": "s", "order": 0, "arm": "adapted", "baseline": "control"}]).to_parquet(
        study / "tables" / "comparisons.parquet"
    )
    result = run_benchmark("quickstart_answer.py", tmp_path, str(study), "--seeds", "0-1",
                           "--workers", "1")  # fmt: skip
    assert set(result["arms"]) == {"adapted", "control"}
    assert sorted(result["arms"]["control"]["per_seed"]) == ["0", "1"]
    (compared,) = result["comparisons"]
    assert compared["seeds"] == 2 and compared["low"] <= compared["difference"] <= compared["high"]


@pytest.mark.slow
def test_trackers_benchmark_runs_the_study_with_and_without_trackers(tmp_path):
    result = run_benchmark("trackers.py", tmp_path, "--trials", "2", "--steps", "4", "--bench",
                           str(tmp_path / "bench"), "--node-ip-address", LOOPBACK)  # fmt: skip
    assert set(result["trial_seconds"]) == {"untracked", "tracked"}
    assert result["order"] == ["untracked", "tracked", "tracked", "untracked"]
    assert [len(runs) for runs in result["trial_seconds"].values()] == [2, 2]
    assert result["trial_ratio"] > 0 and result["wall_ratio"] > 0
