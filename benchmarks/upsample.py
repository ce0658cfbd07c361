"""Bilinear upsampling of logits, forward and backward: ``F.interpolate`` against the separable
matrix form (``upsample: separable``), at the paper's sizes, in one run.

    python benchmarks/upsample.py --device cuda --json benchmarks/results/upsample_cuda.json
    python benchmarks/upsample.py --repeats 5          # CPU

19x91x161 logits to 720x1280 (source) and 19x65x129 to 512x1024 (target), align_corners True
as the official code. Reports the median seconds of forward + backward for each method and
dtype, the ratio, and the largest difference from ``F.interpolate`` in fp32.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import emit

from adaptseg.upsample import separable_bilinear

CASES = {"source": ((91, 161), (720, 1280)), "target": ((65, 129), (512, 1024))}


def timed(function, x: torch.Tensor, size, repeats: int, device: torch.device) -> float:
    seconds = []
    for _ in range(repeats + 1):
        x.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function(x, size).float().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[1:])  # the first is a warm-up


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    def interpolate(x, size):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)

    def separable(x, size):
        return separable_bilinear(x, size, True)

    rows = []
    for name, (size_in, size_out) in CASES.items():
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(1, 19, *size_in, device=device, dtype=dtype, requires_grad=True)
            official = timed(interpolate, x, size_out, args.repeats, device)
            matrix = timed(separable, x, size_out, args.repeats, device)
            rows.append(
                {
                    "case": name,
                    "dtype": str(dtype).removeprefix("torch."),
                    "interpolate_ms": round(1000 * official, 3),
                    "separable_ms": round(1000 * matrix, 3),
                    "speedup": round(official / matrix, 3),
                }
            )
        x = torch.randn(1, 19, *size_in, device=device)
        difference = (interpolate(x, size_out) - separable(x, size_out)).abs().max().item()
        rows.append({"case": name, "max_abs_difference_fp32": difference})
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    result = {
        "benchmark": "upsample",
        "device": device_name,
        "rows": rows,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }
    return emit(result, args.json)


if __name__ == "__main__":
    main()
