"""Speed, memory and achieved FLOP/s of one full AdaptSegNet iteration: faithful against fast.

    python benchmarks/step.py --backbone resnet101 --size 256x512 --levels multi \\
        --steps 3 --warmup 1 --json benchmarks/results/step_cpu.json
    python benchmarks/step.py --backbone resnet101 --size 720x1280+512x1024 \\
        --levels multi,single --device cuda --steps 20 --warmup 5   # paper sizes (source+target)

Each (backbone, size, levels, mode) runs in its own process, so peak memory is that
configuration's own (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the process's peak
resident set). ``faithful`` is PyTorch's defaults in fp32 (TF32 convolutions allowed on CUDA,
as PyTorch allows them by default); ``fast`` sets the config keys in ``FAST`` (``amp: auto``:
bf16 only where the device computes it natively). Every row names the CPU kind (AVX2,
AVX-512, AVX-512 BF16, AMX) as torch uses it, and what ``auto`` chose; ``--modes`` also takes
``fast-bf16`` (the fast mode with bf16 forced) to show what ``auto`` avoids. The ratios
compare modes measured in the same run. FLOPs per iteration come from torch's FLOP counter on
one extra iteration (forward and backward of G and both discriminators).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import emit

FAITHFUL: dict[str, Any] = {}
FAST: dict[str, Any] = {
    "amp": "auto",
    "channels_last": True,
    "optimizer_impl": "fused",
    "cudnn_benchmark": True,
    "upsample": "separable",
}


class FixedBatches:
    """One batch, made before the timed loop and already on the device, handed out forever:
    with it the benchmark times the training step alone, not the data generator."""

    def __init__(self, dataset, batch_size: int, device: torch.device) -> None:
        items = [dataset[i] for i in range(batch_size)]
        if isinstance(items[0], tuple):
            self.batch = [torch.stack([item[k] for item in items]).to(device) for k in (0, 1)]
        else:
            self.batch = torch.stack(items).to(device)

    def __next__(self):
        return self.batch

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
MODES = {"faithful": FAITHFUL, "fast": FAST, "fast-bf16": {**FAST, "amp": "bf16"}}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _sizes(text: str) -> tuple[str, str]:
    source, _, target = text.partition("+")
    return source, target or source


def measure(case: dict[str, Any]) -> dict[str, Any]:
    """One configuration, in this process."""
    from torch.utils.flop_counter import FlopCounterMode

    from adaptseg.config import build_config
    from adaptseg.data import RandomSegDataset
    from adaptseg.trainer import Trainer

    source_size, target_size = _sizes(case["size"])
    cfg = build_config(
        {
            "source": "random",
            "target": "random",
            "backbone": case["backbone"],
            "multi_level": case["levels"] == "multi",
            "input_size_source": source_size,
            "input_size_target": target_size,
            "num_workers": 0,
            "device": case["device"],
            "ndf": case.get("ndf", 64),
            **MODES[case["mode"]],
        },
        origin="benchmarks/step.py",
    )
    source = RandomSegDataset(4, cfg.input_size_source, cfg.num_classes)
    target = RandomSegDataset(
        4, cfg.input_size_target, cfg.num_classes, domain=1, with_labels=False
    )
    trainer = Trainer(cfg, source, target)
    if case.get("data", "prefetched") == "prefetched":
        trainer.source_stream = FixedBatches(source, cfg.batch_size, trainer.device)
        trainer.target_stream = FixedBatches(target, cfg.batch_size, trainer.device)
    cuda = trainer.device.type == "cuda"
    for _ in range(case["warmup"]):
        trainer.step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(case["steps"]):
        trainer.step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / case["steps"]
    peak_gb = (
        torch.cuda.max_memory_allocated() / 2**30
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    flops = None
    if case["flops"]:
        counter = FlopCounterMode(display=False)
        with counter:
            trainer.step()
        flops = counter.get_total_flops()
    return {
        **{k: case[k] for k in ("backbone", "size", "levels", "mode")},
        "seconds_per_iteration": round(seconds, 4),
        "iterations_per_second": round(1.0 / seconds, 4),
        "peak_memory_gb": round(peak_gb, 3),
        "peak_memory_kind": "cuda_max_allocated" if cuda else "process_max_rss",
        "tflop_per_iteration": round(flops / 1e12, 4) if flops else None,
        "achieved_tflop_per_second": round(flops / 1e12 / seconds, 4) if flops else None,
        "device": torch.cuda.get_device_name() if cuda else cpu_name(),
        "cpu_kind": trainer.capabilities.cpu_isa,
        # Set when a CPU kind is emulated by capping torch's kernels (docs/performance.md).
        "isa_caps": {k: os.environ[k] for k in ISA_CAPS if k in os.environ},
        "amp_used": trainer.amp,
        "timed": "the step alone (one batch made beforehand, on the device)"
        if case.get("data", "prefetched") == "prefetched"
        else "the step with the loader",
        "threads": torch.get_num_threads(),
        "settings": MODES[case["mode"]],
    }


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--case", json.dumps(case)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"{case} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="resnet101", help="comma-separated backbones")
    parser.add_argument("--size", default="256x512", help="HxW, or SOURCE+TARGET sizes")
    parser.add_argument("--levels", default="multi", help="multi, single or multi,single")
    parser.add_argument("--modes", default="faithful,fast")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--ndf", type=int, default=64)
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    parser.add_argument(
        "--data",
        choices=("prefetched", "loader"),
        default="prefetched",
        help="prefetched (default): time the step alone on batches made beforehand on the "
        "device; loader: through the data stream (benchmarks/loader.py measures loading)",
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(measure(json.loads(args.case))))
        return {}
    rows = []
    for backbone in args.backbone.split(","):
        for levels in args.levels.split(","):
            for mode in args.modes.split(","):
                case = {
                    "backbone": backbone,
                    "size": args.size,
                    "levels": levels,
                    "mode": mode,
                    "steps": args.steps,
                    "warmup": args.warmup,
                    "device": args.device,
                    "ndf": args.ndf,
                    "flops": not args.no_flops,
                    "data": args.data,
                }
                rows.append(run_case(case))
                print(
                    f"{backbone} {levels} {mode}: {rows[-1]['seconds_per_iteration']:.3f} s/it",
                    file=sys.stderr,
                )
    ratios = []
    for row in rows:
        if not row["mode"].startswith("fast"):
            continue
        same = ("backbone", "size", "levels")
        base = next(
            (r for r in rows if r["mode"] == "faithful" and all(r[k] == row[k] for k in same)),
            None,
        )
        if base:
            ratios.append(
                {
                    **{k: row[k] for k in ("backbone", "size", "levels", "mode", "cpu_kind")},
                    "speedup_fast_over_faithful": round(
                        base["seconds_per_iteration"] / row["seconds_per_iteration"], 3
                    ),
                    "memory_fast_over_faithful": round(
                        row["peak_memory_gb"] / base["peak_memory_gb"], 3
                    ),
                }
            )
    result = {
        "benchmark": "step",
        "rows": rows,
        "ratios": ratios,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    return emit(result, args.json)


if __name__ == "__main__":
    main()
