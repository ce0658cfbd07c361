"""Time each model a study spec trains, here, and optionally record the figures with the project.

    python benchmarks/step_times.py SPEC.yaml [--set key=value ...] [--record] [--json FILE]

The dry-run's cost (``python -m study.run SPEC --dry-run``) needs seconds per step and per
evaluated image for each model the arms train. ``--dry-run --calibrate`` measures them on the
user's machine; this script measures them on the machine it runs on and, with ``--record``,
writes them into ``study/stages/step_times.json`` keyed by the device's kind (``cpu AVX2``,
``cpu AMX``, ``cuda sm_90``), the figures a dry-run uses where nothing better is known. Run it
with torch capped to AVX2 (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``) to record the
AVX2 kind on an AMX machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common import emit

from study.spec.arms import arm_config
from study.spec.loading import load_spec
from study.stages import cost


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--record", action="store_true", help="write study/stages/step_times.json")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    spec = load_spec(args.spec, args.overrides)
    threads = max(int(spec.resources.cpus_per_trial), 1)
    entries: dict[str, dict[str, Any]] = {}
    for arm in spec.arms:
        cfg = arm_config(spec, arm)
        key = cost.model_key(cfg, cost.device_and_amp(cfg)[1])
        if key not in entries:
            figure = cost.calibrate(cfg, threads)
            entries[key] = {
                "step_s": figure.step_s,
                "image_s": figure.image_s,
                "measured": figure.source.rsplit(" ", 1)[-1],
                "device": figure.device,
                "kind": cost.device_kind(cfg),
                "model": key,
            }
    if args.record:
        cost.record(list(entries.values()))
    return emit({"spec": str(args.spec), "figures": list(entries.values())}, args.json)


if __name__ == "__main__":
    main()
