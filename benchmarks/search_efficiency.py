"""Compute that ASHA + TPE saves against random search without early stopping.

    python benchmarks/search_efficiency.py [--trials 12] [--steps 300] [--seeds 0,1,2]
        [--json benchmarks/results/search_efficiency.json]

On the synthetic benchmark (64x128, the small backbone), for each seed: one search of the
single-level arm with random sampling and no early stopping, and one with TPE and ASHA, the
same number of trials, one trial at a time (so the order trials ran in is the order compute
was spent). For each: the trial-steps spent until an evaluation first reached the best select
mIoU that random search found, and the other way round: the trial-steps random search spent
until it matched the best that ASHA + TPE found. Compute is counted in trial-steps, not
seconds, so the figure does not depend on how loaded the machine is. Rerunning with the same
``--work`` reuses finished studies (a finished study reruns nothing).
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

import yaml
from common import emit

METHODS = {
    "random": {"sampler": {"kind": "random"}, "scheduler": {"kind": "none"}},
    "asha_tpe": {
        "sampler": {"kind": "tpe", "n_startup_trials": 4},
        "scheduler": {"kind": "asha", "reduction_factor": 3},
    },
}


def study_spec(bench: Path, method: str, seed: int, trials: int, steps: int) -> dict[str, Any]:
    eval_every = max(1, steps // 10)
    settings = METHODS[method]
    scheduler = dict(settings["scheduler"])
    if scheduler["kind"] == "asha":
        scheduler["grace_period"] = eval_every
    return {
        "name": f"{method}-{seed}",
        "data": {
            "synthetic": {
                "root": str(bench),
                "seed": 0,
                "size": "64x128",
                "counts": [400, 400, 80],
            }
        },
        "train": {
            "backbone": "small",
            "ndf": 16,
            "optimizer": "adam",
            "batch_size": 4,
            "preprocess": "torchvision",
            "input_size_source": "64x128",
            "input_size_target": "64x128",
            "num_steps": steps,
            "schedule_steps": steps,
            "eval_every": eval_every,
            "checkpoint_every": eval_every,
            "num_workers": 0,
        },
        "arms": {"single_level": {"multi_level": False}},
        "search": {
            "num_samples": trials,
            "sampler": {**settings["sampler"], "seed": seed},
            "space": {
                "lambda_adv_main": {"log_uniform": [1.0e-4, 1.0e-1]},
                "lr": {"log_uniform": [1.0e-5, 1.0e-2]},
                "lr_d": {"log_uniform": [1.0e-5, 1.0e-3]},
            },
        },
        "scheduler": scheduler,
        "confirm": {"top_k": 0, "seeds": [0]},
        "resources": {"cpus_per_trial": 2, "max_concurrent_trials": 1},
        "checkpoint": {"every_evals": 1, "num_to_keep": 1},
        "ray": {"num_cpus": 2},
    }


def trials_in_order(experiment: Path) -> list[list[dict[str, Any]]]:
    """Each trial's evaluation rows, trials in the order they started."""
    trials = []
    for result in experiment.glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r.get("split", "select") == "select" and "miou" in r]
        if rows:
            trials.append(rows)
    return sorted(trials, key=lambda rows: rows[0]["timestamp"] - rows[0]["time_total_s"])


def compute_to_reach(trials: list[list[dict[str, Any]]], target: float) -> int | None:
    """Trial-steps spent (trials run one after another) until some evaluation >= target."""
    spent = 0
    for rows in trials:
        for row in rows:
            if row["miou"] >= target:
                return spent + int(row["step"])
        spent += max(int(r["step"]) for r in rows)
    return None


def summarise(experiment: Path) -> dict[str, Any]:
    trials = trials_in_order(experiment)
    mious = [r["miou"] for rows in trials for r in rows]
    return {
        "trials": len(trials),
        "total_steps": sum(max(int(r["step"]) for r in rows) for rows in trials),
        "best_miou": max(mious, default=None),
    }


def run_study(spec: dict[str, Any], work: Path, extra: list[str]) -> float:
    path = work / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "study.run", str(path), "--results", str(work / "results"), *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if result.returncode != 0:
        raise SystemExit(f"{spec['name']} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--bench", type=Path, default=Path("data/synthetic-64x128"))
    parser.add_argument("--work", type=Path, help="keep the studies here (default: temporary)")
    parser.add_argument("--node-ip-address", help="pin the Ray each study starts (tests)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    extra = ["--node-ip-address", args.node_ip_address] if args.node_ip_address else []
    seeds = [int(s) for s in args.seeds.split(",")]
    bench = args.bench.absolute()
    with tempfile.TemporaryDirectory() as scratch:
        work = (args.work or Path(scratch)).absolute()
        work.mkdir(parents=True, exist_ok=True)
        per_seed = []
        for seed in seeds:
            record: dict[str, Any] = {"seed": seed}
            for method in METHODS:
                spec = study_spec(bench, method, seed, args.trials, args.steps)
                seconds = run_study(spec, work, extra)
                experiment = work / "results" / spec["name"] / "ray" / "search-single_level"
                record[method] = {**summarise(experiment), "wall_seconds": round(seconds, 1)}
                record[method]["_trials"] = trials_in_order(experiment)
                print(
                    f"seed {seed} {method}: {record[method]['best_miou']:.4f} best, "
                    f"{record[method]['total_steps']} trial-steps",
                    file=sys.stderr,
                )
            target = record["random"]["best_miou"]
            other = record["asha_tpe"]["best_miou"]
            for method in METHODS:
                trials = record[method].pop("_trials")
                record[method]["steps_to_random_best"] = compute_to_reach(trials, target)
                record[method]["steps_to_asha_tpe_best"] = compute_to_reach(trials, other)
            # The other way round: what random search spends to match what ASHA + TPE found.
            record["ratio_at_asha_tpe_best"] = (
                record["asha_tpe"]["steps_to_asha_tpe_best"]
                / record["random"]["steps_to_asha_tpe_best"]
                if record["random"]["steps_to_asha_tpe_best"]
                else None
            )
            record["asha_tpe_best_over_random_best"] = record["asha_tpe"]["best_miou"] / target
            reached = record["asha_tpe"]["steps_to_random_best"]
            record["ratio"] = (
                reached / record["random"]["steps_to_random_best"] if reached is not None else None
            )
            per_seed.append(record)
    ratios = [r["ratio"] for r in per_seed if r["ratio"] is not None]
    result = {
        "benchmark": "search_efficiency",
        "trials_per_search": args.trials,
        "steps_per_trial": args.steps,
        "seeds": per_seed,
        "seeds_where_asha_tpe_reached_random_best": len(ratios),
        "median_ratio_over_seeds_that_reached": statistics.median(ratios) if ratios else None,
        "median_ratio_at_asha_tpe_best": (
            statistics.median(at_best)
            if (
                at_best := [
                    r["ratio_at_asha_tpe_best"] for r in per_seed if r["ratio_at_asha_tpe_best"]
                ]
            )
            else None
        ),
        "median_total_steps_ratio": statistics.median(
            r["asha_tpe"]["total_steps"] / r["random"]["total_steps"] for r in per_seed
        ),
        "date": time.strftime("%Y-%m-%d"),
    }
    return emit(result, args.json)


if __name__ == "__main__":
    main()
