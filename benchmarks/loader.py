"""Data loading against the step: images/s of the real loader path and what the step consumes.

    python benchmarks/loader.py [--file-size 1024x2048] [--images 32] [--workers 0,1,2]
        [--step-json benchmarks/results/step_cpu.json] [--json benchmarks/results/loader.json]

Writes GTA5- and Cityscapes-layout files with the synthetic generator (at ``--file-size``, the
size of the files on disk), then draws batches through the trainer's own path: the GTA5 and
Cityscapes loaders (PNG decode, bicubic resize to the official 720x1280 / 512x1024, label id
lookup, Caffe preprocessing) behind the endless, seeded ``InfiniteStream`` with ``num_workers``
processes. The step consumes one source and one target image per iteration at batch 1; with
``--step-json`` (from benchmarks/step.py) the loader's images/s are set against the fastest
measured step's iterations/s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from common import emit

from adaptseg.config import parse_size
from adaptseg.data.files import (
    CITYSCAPES_LABELS,
    SegmentationFiles,
    cityscapes_samples,
    gta5_samples,
)
from adaptseg.data.stream import InfiniteStream
from adaptseg.data.synthetic import ensure_benchmark


def images_per_second(dataset: SegmentationFiles, workers: int, draws: int) -> float:
    stream = InfiniteStream(dataset, 1, seed=0, num_workers=workers)
    next(stream)  # worker start-up is paid once per run, not per image
    start = time.perf_counter()
    for _ in range(draws):
        next(stream)
    return draws / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--file-size", default="1024x2048", help="HxW of the files on disk")
    parser.add_argument("--images", type=int, default=32, help="files per data set")
    parser.add_argument("--draws", type=int, default=48, help="images drawn per measurement")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--root", type=Path, default=Path("data/synthetic-loader"))
    parser.add_argument("--step-json", type=Path, help="benchmarks/step.py output to compare")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    file_size = parse_size(args.file_size)
    root = ensure_benchmark(args.root.absolute(), 0, file_size, (args.images, args.images, 2))
    streams = {
        "source_gta5_720x1280": SegmentationFiles(
            gta5_samples(root / "gta5"), (720, 1280), CITYSCAPES_LABELS, "caffe"
        ),
        "target_cityscapes_512x1024": SegmentationFiles(
            cityscapes_samples(root / "cityscapes", "train", False),
            (512, 1024),
            CITYSCAPES_LABELS,
            "caffe",
            with_labels=False,
        ),
    }
    rows = []
    for name, dataset in streams.items():
        for workers in (int(w) for w in args.workers.split(",")):
            rate = images_per_second(dataset, workers, args.draws)
            rows.append(
                {"stream": name, "num_workers": workers, "images_per_second": round(rate, 2)}
            )
    result: dict[str, Any] = {"benchmark": "loader", "file_size": args.file_size, "rows": rows}
    if args.step_json:
        step = json.loads(args.step_json.read_text())
        fastest = min(step["rows"], key=lambda r: r["seconds_per_iteration"])
        consumed = fastest["iterations_per_second"]  # images/s per stream at batch 1
        result["step"] = {k: fastest[k] for k in ("backbone", "size", "levels", "mode", "device")}
        result["step_images_per_second_per_stream"] = consumed
        result["loader_over_step"] = {
            f"{r['stream']}/workers={r['num_workers']}": round(
                r["images_per_second"] / consumed, 2
            )
            for r in rows
        }
    result["date"] = time.strftime("%Y-%m-%d")
    return emit(result, args.json)


if __name__ == "__main__":
    main()
