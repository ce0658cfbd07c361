"""Several trials on one device: a study's total training steps per second with 1, 2 and 4
trials packed per GPU (Ray's fractional ``gpus_per_trial``) or per the CPU's cores.

    python benchmarks/throughput.py --packing 1,2,4 --backbone resnet101 \\
        --size 720x1280+512x1024 --steps 60 --json benchmarks/results/throughput_cuda.json
    python benchmarks/throughput.py --packing 1,2 --steps 40      # CPU: the small preset

For each packing P a real study runs P identical trials at once (the same sampled config and
seed, ``deterministic`` on, the fast mode) with ``gpus_per_trial: 1/P`` on a GPU; without
one, P one-thread trials share the CPU's cores. Reported per packing: the study's training
steps per second over the stage's wall clock (first trial start to last trial end), each
trial's peak memory, and whether every trial's final mIoU equals the unpacked trial's
(packing must not change results).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from common import emit
from step import FAST

REPO = Path(__file__).resolve().parents[1]


def spec(args: argparse.Namespace, packing: int, bench: Path, cuda: bool) -> dict:
    source, _, target = args.size.partition("+")
    cores = os.cpu_count() or 1
    return {
        "name": f"packing{packing}",
        "data": {
            "synthetic": {"root": str(bench), "size": args.bench_size, "counts": [16, 16, 8]}
        },
        "train": {
            "backbone": args.backbone,
            "input_size_source": source,
            "input_size_target": target or source,
            "num_steps": args.steps,
            "schedule_steps": args.steps,
            "eval_every": args.steps,
            "num_workers": 0,
            "deterministic": True,
            "eval_limit": 4,
            "ndf": args.ndf,
            **{k: v for k, v in FAST.items() if cuda or k != "cudnn_benchmark"},
        },
        "arms": {"single_level": {"multi_level": False}},
        "search": {
            "num_samples": packing,
            "sampler": {"kind": "random", "seed": 0},
            "space": {"lr": {"categorical": [args.lr]}},
        },
        "scheduler": {"kind": "none"},
        "confirm": {"top_k": 0, "seeds": [0]},
        # One thread per trial on CPU whatever the packing: the same kernels, the same sums.
        "resources": {
            "gpus_per_trial": 1 / packing if cuda else 0,
            "cpus_per_trial": 1,
            "max_concurrent_trials": packing,
        },
        "ray": {"num_cpus": max(cores, packing)},
    }


def measure(args: argparse.Namespace, packing: int, work: Path, cuda: bool) -> dict:
    folder = work / f"packing{packing}"
    folder.mkdir()
    (folder / "study.yaml").write_text(yaml.safe_dump(spec(args, packing, work / "bench", cuda)))
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "study.run",
            str(folder / "study.yaml"),
            "--results",
            str(folder / "results"),
            *(["--node-ip-address", args.node_ip] if args.node_ip else []),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if result.returncode != 0:
        raise SystemExit(f"packing {packing} failed:\n{result.stderr[-3000:]}")
    rows = []
    for path in (folder / "results" / f"packing{packing}" / "ray").glob("search-*/*/result.json"):
        rows.append([json.loads(line) for line in path.read_text().splitlines()])
    starts = [trial[0]["timestamp"] - trial[0]["time_total_s"] for trial in rows]
    ends = [trial[-1]["timestamp"] for trial in rows]
    wall = max(ends) - min(starts)
    return {
        "trials_per_device": packing,
        "steps_per_second": round(packing * args.steps / wall, 3),
        "stage_wall_seconds": round(wall, 1),
        "command_seconds": round(time.perf_counter() - started, 1),
        "peak_memory_gb_per_trial": [round(trial[-1]["peak_memory_gb"], 3) for trial in rows],
        "final_miou_per_trial": [trial[-1]["miou"] for trial in rows],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--packing", default="1,2", help="trials per device, e.g. 1,2,4")
    parser.add_argument("--backbone", default="small")
    parser.add_argument("--size", default="64x128", help="HxW, or SOURCE+TARGET sizes")
    parser.add_argument("--bench-size", default="64x128", help="the synthetic images' HxW")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--ndf", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2.5e-4)
    parser.add_argument("--node-ip", default=None, help="pin the Ray it starts (tests: loopback)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    from adaptseg.data.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        height, width = (int(v) for v in args.bench_size.split("x"))
        generate(work / "bench", seed=0, size=(height, width), counts=(16, 16, 8))
        rows = [measure(args, int(p), work, cuda) for p in args.packing.split(",")]
    alone = rows[0]["final_miou_per_trial"][0]
    for row in rows:
        row["speedup_over_one"] = round(row["steps_per_second"] / rows[0]["steps_per_second"], 3)
        row["results_unchanged"] = all(abs(m - alone) <= 1e-6 for m in row["final_miou_per_trial"])
    device = torch.cuda.get_device_name() if cuda else f"CPU, {os.cpu_count()} cores"
    result = {
        "benchmark": "throughput",
        "device": device,
        "backbone": args.backbone,
        "size": args.size,
        "steps": args.steps,
        "rows": rows,
        "date": time.strftime("%Y-%m-%d"),
    }
    return emit(result, args.json)


if __name__ == "__main__":
    main()
