"""Measure the synthetic benchmark's domain gap and whether adaptation closes part of it.

    python benchmarks/gap.py OUT [--steps 600] [--seeds 0,1] [--set key=value ...]

Trains the small preset on the benchmark in OUT (generated there first if absent) for the same
number of steps as: source-only, oracle (Cityscapes-layout train labels), bn_control (target
images pass through G, every lambda_adv is 0) and single-level adaptation, each with every
seed, and prints target-val mIoU (the whole val set). The benchmark is useful when
source-only <= 0.5 x oracle and adaptation beats bn_control by more than the seed-to-seed
spread. Runs go two at a time, one thread each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import torch
from common import emit

from adaptseg.config import TrainConfig, load_config, parse_size
from adaptseg.data.build import build_datasets
from adaptseg.data.synthetic import DEFAULT_SIZE, ensure_benchmark
from adaptseg.trainer import Trainer

# The small preset on the synthetic benchmark: a net trained from scratch needs Adam
# (docs/data.md); D is the paper's design at ndf 32; horizontal flips as in the prototype.
PRESET: dict[str, Any] = {
    "backbone": "small",
    "ndf": 32,
    "optimizer": "adam",
    "lr": 1e-3,
    "batch_size": 4,
    "random_mirror": True,
    "num_workers": 0,
    "preprocess": "torchvision",
}
ARMS: dict[str, dict[str, Any]] = {
    "source_only": {"use_target": False, "multi_level": False},
    "oracle": {"use_target": False, "multi_level": False, "source": "cityscapes"},
    "bn_control": {"multi_level": False, "lambda_adv_main": 0.0},
    "single_level": {"multi_level": False, "lambda_adv_main": 0.005},
}


def arm_config(
    root: Path,
    settings: dict[str, Any],
    seed: int,
    steps: int,
    size: tuple[int, int],
    extra: list[str],
) -> TrainConfig:
    """The small preset on the benchmark in ``root`` with one arm's settings."""
    values = {
        **PRESET,
        "source": "gta5",
        "source_root": str(root / "gta5"),
        "target": "cityscapes",
        "target_root": str(root / "cityscapes"),
        "input_size_source": f"{size[0]}x{size[1]}",
        "input_size_target": f"{size[0]}x{size[1]}",
        "num_steps": steps,
        "schedule_steps": steps,
        "eval_every": steps,
        "seed": seed,
        **settings,
    }
    if values["source"] == "cityscapes":
        values["source_root"] = str(root / "cityscapes")
    pairs = [f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in values.items()]
    return load_config(None, [*pairs, *extra])


class Job(NamedTuple):
    """One training run of the measurement (picklable, for the worker processes)."""

    root: Path
    arm: str
    settings: dict[str, Any]
    seed: int
    steps: int
    size: tuple[int, int]
    extra: list[str]


def train_and_evaluate(job: Job) -> dict[str, Any]:
    """One run in a worker process: train, then mIoU on the whole target val set."""
    torch.set_num_threads(1)
    arm, seed = job.arm, job.seed
    cfg = arm_config(job.root, job.settings, seed, job.steps, job.size, job.extra)
    data = build_datasets(cfg, eval_parts=["all"])
    trainer = Trainer(cfg, data.source, data.target, data.eval_sets)
    start = time.perf_counter()
    for _ in range(cfg.num_steps):
        trainer.step()
    metrics = trainer.evaluate("all")
    return {
        "arm": arm,
        "seed": seed,
        "miou": metrics["miou"],
        "seconds": time.perf_counter() - start,
    }


def verdict(results: list[dict[str, Any]]) -> dict[str, Any]:
    by_arm: dict[str, list[float]] = {}
    for row in results:
        by_arm.setdefault(row["arm"], []).append(row["miou"])
    mean = {arm: statistics.fmean(v) for arm, v in by_arm.items()}
    spread = max(max(by_arm[a]) - min(by_arm[a]) for a in ("bn_control", "single_level"))
    gain = mean["single_level"] - mean["bn_control"]
    return {
        "mean": mean,
        "gap_ok": mean["source_only"] <= 0.5 * mean["oracle"],
        "adaptation_gain": gain,
        "seed_spread": spread,
        "adaptable": gain > spread,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/gap.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", type=Path, help="benchmark folder (generated if absent)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument(
        "--lambda-adv",
        type=float,
        default=ARMS["single_level"]["lambda_adv_main"],
        help="lambda_adv_main of the single_level arm",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="override a config key of every arm",
    )
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    meta = args.out / "synthetic.json"
    if meta.exists():  # an existing benchmark keeps its own size
        size = parse_size(json.loads(meta.read_text())["size"])
    else:
        ensure_benchmark(args.out)
        size = DEFAULT_SIZE
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = args.arms.split(",")
    settings = {
        **ARMS,
        "single_level": {**ARMS["single_level"], "lambda_adv_main": args.lambda_adv},
    }
    jobs = [
        Job(args.out, arm, settings[arm], seed, args.steps, size, args.overrides)
        for seed in seeds
        for arm in arms
    ]
    results = []
    with ProcessPoolExecutor(args.workers) as pool:
        for row in pool.map(train_and_evaluate, jobs):
            print(
                f"{row['arm']:>12} seed {row['seed']}: miou {row['miou']:.4f} "
                f"({row['seconds']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            results.append(row)
    summary = {"steps": args.steps, "lambda_adv": args.lambda_adv, "runs": results}
    if set(ARMS) <= set(arms):
        summary.update(verdict(results))
    emit(summary, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
