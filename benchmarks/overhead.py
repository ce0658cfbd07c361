"""Harness overhead: a study's wall time against the training time of its trials.

    python benchmarks/overhead.py [--trial-seconds 60] [--trials 8] [--concurrency 2]
        [--json benchmarks/results/overhead.json]

Calibrates the small backbone's seconds per step here, then runs ``python -m study.run`` on a
one-arm study (no early stopping, no confirm stage) whose trials each train about
``--trial-seconds``. Reports ``study wall / (sum of trial compute seconds / concurrency)``,
where a trial's compute seconds are the trainer's own training and evaluation time and the
wall time is the whole command as a user runs it (Python and Ray start-up, every trial's
start, checkpoints, tables and the report). Trial start latency is measured for each trial
that waited for a free slot: from the end of the trial before it to its own first training
step, on a warm Ray (Ray's timestamps are whole seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from common import emit

SIZE = "64x128"


def seconds_per_step(steps: int = 20) -> float:
    """The small preset's training step here, single level, batch 4."""
    from adaptseg.config import build_config
    from adaptseg.data import RandomSegDataset
    from adaptseg.trainer import Trainer

    cfg = build_config(
        {**train_settings(100), "source": "random", "target": "random", "multi_level": False},
        origin="benchmarks/overhead.py",
    )
    trainer = Trainer(
        cfg,
        RandomSegDataset(8, cfg.input_size_source),
        RandomSegDataset(8, cfg.input_size_target, domain=1, with_labels=False),
    )
    trainer.step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    return (time.perf_counter() - start) / steps


def train_settings(num_steps: int) -> dict[str, Any]:
    return {
        "backbone": "small",
        "ndf": 16,
        "optimizer": "adam",
        "lr": 1.0e-3,
        "batch_size": 4,
        "preprocess": "torchvision",
        "input_size_source": SIZE,
        "input_size_target": SIZE,
        "num_steps": num_steps,
        "schedule_steps": num_steps,
        "eval_every": max(1, num_steps // 4),
        "num_workers": 0,
        "eval_limit": 20,
    }


def study_spec(bench: Path, trials: int, concurrency: int, num_steps: int) -> dict[str, Any]:
    return {
        "name": "overhead",
        "data": {
            "synthetic": {"root": str(bench), "seed": 0, "size": SIZE, "counts": [200, 200, 40]}
        },
        "train": train_settings(num_steps),
        "arms": {"single_level": {"multi_level": False}},
        "search": {
            "num_samples": trials,
            "sampler": {"kind": "random", "seed": 0},
            "space": {"lambda_adv_main": {"log_uniform": [1.0e-3, 1.0e-2]}},
        },
        "scheduler": {"kind": "none"},
        "confirm": {"top_k": 0, "seeds": [0]},
        "resources": {
            "cpus_per_trial": 2 // concurrency or 1,
            "max_concurrent_trials": concurrency,
        },
        "checkpoint": {"every_evals": 1, "num_to_keep": 2},
        "ray": {"num_cpus": 2},
    }


def trial_rows(experiment: Path) -> list[list[dict[str, Any]]]:
    """Each trial's reported rows, trials in the order they started."""
    out = []
    for result in sorted(experiment.glob("*/result.json")):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if rows:
            out.append(rows)
    return sorted(out, key=lambda rows: rows[0]["timestamp"] - rows[0]["time_total_s"])


def start_latencies(trials: list[list[dict[str, Any]]], concurrency: int) -> list[float]:
    """For each trial that waited for a free slot: seconds from the end of the trial whose slot
    it took to its own first training step (Ray's timestamps are whole seconds)."""
    ends = sorted(rows[-1]["timestamp"] for rows in trials)
    first_steps = [rows[0]["timestamp"] - rows[0]["compute_seconds"] for rows in trials]
    return [first_steps[k] - ends[k - concurrency] for k in range(concurrency, len(trials))]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trial-seconds", type=float, default=60.0)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--bench", type=Path, default=Path("data/synthetic-64x128-overhead"))
    parser.add_argument("--node-ip-address", help="pin the Ray the study starts (tests)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    # Calibrate with the threads each trial will get (Ray gives a trial its CPUs' worth).
    torch.set_num_threads(max(1, 2 // args.concurrency))
    per_step = seconds_per_step()
    num_steps = max(4, round(args.trial_seconds / per_step))
    extra = ["--node-ip-address", args.node_ip_address] if args.node_ip_address else []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        spec = study_spec(args.bench.absolute(), args.trials, args.concurrency, num_steps)
        path = work / "overhead.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        # The benchmark's data are generated before the clock starts (a study does it once).
        from adaptseg.data.synthetic import ensure_benchmark

        ensure_benchmark(args.bench.absolute(), 0, (64, 128), (200, 200, 40))
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "study.run", str(path), "--results", str(work), *extra],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wall = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(f"the study failed:\n{result.stderr[-3000:]}")
        trials = trial_rows(work / "overhead" / "ray" / "search-single_level")
    compute = [rows[-1]["compute_seconds"] for rows in trials]
    latency = start_latencies(trials, args.concurrency)
    ideal = sum(compute) / args.concurrency
    out = {
        "benchmark": "overhead",
        "trials": len(trials),
        "concurrency": args.concurrency,
        "steps_per_trial": num_steps,
        "mean_trial_compute_seconds": round(statistics.mean(compute), 2),
        "study_wall_seconds": round(wall, 2),
        "ideal_seconds": round(ideal, 2),
        "overhead_ratio": round(wall / ideal, 4),
        "warm_trial_start_latency_seconds": [round(x, 1) for x in latency],
        "median_warm_trial_start_latency_seconds": (
            round(statistics.median(latency), 1) if latency else None
        ),
        "date": time.strftime("%Y-%m-%d"),
    }
    return emit(out, args.json)


if __name__ == "__main__":
    main()
