"""Does the fast mode learn as well as faithful fp32? Target-val mIoU of both on the benchmark.

    python benchmarks/fast_miou.py [data/synthetic] [--steps 600] [--seeds 0,1,2]
        [--json benchmarks/results/fast_miou.json]

Trains the single-level arm of ``python benchmarks/gap.py`` (the small preset, lambda_adv
0.005) with every seed, once faithful and once with the fast mode's keys (benchmarks/step.py
``FAST``), and evaluates each on the whole target val set. The fast mode matches "within noise"
when the difference of the means is smaller than the larger seed-to-seed spread of the two.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import emit
from gap import ARMS, Job, train_and_evaluate
from step import FAST

from adaptseg.data.synthetic import DEFAULT_SIZE, ensure_benchmark


def overrides(mode: str, device: str) -> list[str]:
    """The keys of the mode (cudnn_benchmark only where there is cuDNN), on ``device``."""
    pairs = [f"device={device}"]
    if mode == "faithful":
        return pairs
    return pairs + [
        f"{key}={str(value).lower() if isinstance(value, bool) else value}"
        for key, value in FAST.items()
        if key != "cudnn_benchmark" or device == "cuda"
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path, nargs="?", default=Path("data/synthetic"))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--size", default=None, help="HxW of a benchmark to generate")
    parser.add_argument("--counts", default="1000,1000,200")
    parser.add_argument("--workers", type=int, default=2, help="runs at a time (CUDA: use 1)")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where both modes train (the same check on CUDA)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    meta = args.root / "synthetic.json"
    if meta.exists():
        size = tuple(int(v) for v in json.loads(meta.read_text())["size"].split("x"))
    else:
        size = tuple(int(v) for v in args.size.split("x")) if args.size else DEFAULT_SIZE
        counts = tuple(int(c) for c in args.counts.split(","))
        ensure_benchmark(args.root, 0, size, counts)
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [
        Job(
            args.root,
            mode,
            ARMS["single_level"],
            seed,
            args.steps,
            size,
            overrides(mode, args.device),
        )
        for seed in seeds
        for mode in ("faithful", "fast")
    ]
    runs = []
    with ProcessPoolExecutor(args.workers) as pool:
        for row in pool.map(train_and_evaluate, jobs):
            print(
                f"{row['arm']:>8} seed {row['seed']}: miou {row['miou']:.4f} "
                f"({row['seconds']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            runs.append({"mode": row["arm"], "seed": row["seed"], "miou": row["miou"]})
    by_mode = {m: [r["miou"] for r in runs if r["mode"] == m] for m in ("faithful", "fast")}
    spread = max(max(v) - min(v) for v in by_mode.values())
    difference = statistics.fmean(by_mode["fast"]) - statistics.fmean(by_mode["faithful"])
    result = {
        "benchmark": "fast_miou",
        "steps": args.steps,
        "fast_settings": dict(FAST),
        "device": args.device,
        "runs": runs,
        "mean": {m: statistics.fmean(v) for m, v in by_mode.items()},
        "difference_fast_minus_faithful": difference,
        "seed_spread": spread,
        "within_noise": abs(difference) <= spread,
        "date": time.strftime("%Y-%m-%d"),
    }
    return emit(result, args.json)


if __name__ == "__main__":
    main()
