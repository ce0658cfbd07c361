"""Seconds per full AdaptSegNet iteration for a backbone and input size, written as JSON.

python benchmarks/step.py --backbone small --size 128x256 --steps 20
python benchmarks/step.py --backbone resnet101 --size 256x512 --steps 3 --set amp=bf16
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from adaptseg.config import load_config
from adaptseg.data import RandomSegDataset
from adaptseg.trainer import Trainer


def measure(overrides: list[str], size: str, steps: int, warmup: int) -> dict:
    cfg = load_config(
        None,
        [
            "source=random", "target=random", f"input_size_source={size}",
            f"input_size_target={size}", "num_workers=0", "eval_every=1", *overrides,
        ],
    )  # fmt: skip
    source = RandomSegDataset(8, cfg.input_size_source, cfg.num_classes)
    target = RandomSegDataset(
        8, cfg.input_size_target, cfg.num_classes, domain=1, with_labels=False
    )
    trainer = Trainer(cfg, source, target)
    for _ in range(warmup):
        trainer.step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    seconds = (time.perf_counter() - start) / steps
    return {
        "config": {k: v for k, v in cfg.to_dict().items() if k in {
            "backbone", "multi_level", "ndf", "amp", "channels_last", "input_size_source",
        }},
        "seconds_per_iteration": seconds,
        "device": str(trainer.device),
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", default="small")
    parser.add_argument("--size", default="128x256", help="HxW of source and target images")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    result = measure(
        [f"backbone={args.backbone}", *args.overrides], args.size, args.steps, args.warmup
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
