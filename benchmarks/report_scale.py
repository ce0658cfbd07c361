"""Seconds to export tables and build the report for a large made-up study, and the HTML size.

    python benchmarks/report_scale.py [--trials 1000] [--evals 30] [--json FILE]

Trials are split over the four arms of the levels ablation (plus 3 confirm seeds per arm);
every evaluation has 19 per-class IoUs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import emit

# The made-up studies come from the tests' fixture module.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fabricate import ARMS, fabricate  # noqa: E402

from reports.report import build
from study.tables.export import export


def measure(trials: int, evals: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "scale"
        fabricate(root, trials_per_arm=max(1, trials // len(ARMS)), evals=evals)
        start = time.perf_counter()
        counts = export(root)
        exported = time.perf_counter()
        report = build(root)
        built = time.perf_counter()
        return {
            "trials": counts["trials"],
            "eval_rows": counts["evals"],
            "class_iou_rows": counts["class_iou"],
            "export_seconds": round(exported - start, 2),
            "report_seconds": round(built - exported, 2),
            "total_seconds": round(built - start, 2),
            "html_mb": round(report.stat().st_size / 1e6, 2),
        }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--evals", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = {
        "benchmark": "report_scale",
        **measure(args.trials, args.evals),
        "date": time.strftime("%Y-%m-%d"),
    }
    return emit(result, args.json)


if __name__ == "__main__":
    main()
