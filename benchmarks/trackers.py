"""What following a study in TensorBoard and MLflow costs its trials.

    python benchmarks/trackers.py [--trials 4] [--steps 200] [--json FILE]

Runs the same one-arm study (the small backbone at 64x128, evaluations every quarter, two
trials at once) twice in one call: without trackers, then with ``trackers: {tensorboard: true,
mlflow: {}}``, in the order untracked, tracked, tracked, untracked (``--rounds`` times), so that
a machine warming up or slowing down weighs on both alike. Reports each run's mean trial time
(the trainer's compute seconds: training and evaluation, which the trackers' work in the driver
competes with on a small machine) and the whole command's wall time, and the ratios with over
without, of the means over the runs. The goal: at most 1.02 for the trials' time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from common import emit
from overhead import study_spec

from adaptseg.data.synthetic import ensure_benchmark


def run(spec: dict[str, Any], work: Path, extra: list[str]) -> tuple[float, float]:
    """(mean trial compute seconds, the command's wall seconds) of one study run."""
    path = work / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
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
    trials = pd.read_parquet(work / spec["name"] / "tables" / "trials.parquet")
    return statistics.fmean(trials["compute_seconds"]), wall


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1, help="ABBA rounds (4 runs each)")
    parser.add_argument("--bench", type=Path, default=Path("data/synthetic-64x128-overhead"))
    parser.add_argument("--node-ip-address", help="pin the Ray the study starts (tests)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    extra = ["--node-ip-address", args.node_ip_address] if args.node_ip_address else []
    ensure_benchmark(args.bench.absolute(), 0, (64, 128), (200, 200, 40))
    trackers = {"untracked": {}, "tracked": {"tensorboard": True, "mlflow": {}}}
    measured: dict[str, list[tuple[float, float]]] = {"untracked": [], "tracked": []}
    order = ["untracked", "tracked", "tracked", "untracked"] * args.rounds
    for index, name in enumerate(order):
        with tempfile.TemporaryDirectory() as scratch:
            spec = study_spec(args.bench.absolute(), args.trials, 2, args.steps)
            spec["name"] = name
            spec["trackers"] = trackers[name]
            measured[name].append(run(spec, Path(scratch), extra))
        print(f"run {index + 1}/{len(order)} ({name}): {measured[name][-1]}", file=sys.stderr)

    def mean(name: str, column: int) -> float:
        return statistics.fmean(run[column] for run in measured[name])

    result = {
        "trials": args.trials,
        "steps": args.steps,
        "order": order,
        "trial_seconds": {name: [run[0] for run in runs] for name, runs in measured.items()},
        "wall_seconds": {name: [run[1] for run in runs] for name, runs in measured.items()},
        "trial_ratio": mean("tracked", 0) / mean("untracked", 0),
        "wall_ratio": mean("tracked", 1) / mean("untracked", 1),
    }
    return emit(result, args.json)


if __name__ == "__main__":
    main()
