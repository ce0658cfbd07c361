"""Is the quick-start's answer more than one lucky run? Re-run its confirm stage on more seeds.

    python benchmarks/quickstart_answer.py results/quickstart [--seeds 0-7] [--json FILE]

Takes the best config of each arm of a finished study (``best/<arm>.yaml``, the configs its
confirm stage ran) and trains each on every seed as the confirm stage does, without Ray:
evaluations on the ``select`` split every ``eval_every`` steps, the best-on-select weights
evaluated on the ``report`` split. Prints each arm's mean and the study's comparisons (its
``tables/comparisons.parquet``) as paired differences with 95% intervals over the seeds. Runs
go two at a time, one thread each.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from common import emit

from adaptseg.config import build_config
from adaptseg.data.build import build_datasets
from adaptseg.trainer import Trainer
from reports.stats import paired_difference


def confirm_run(job: tuple[str, dict[str, Any], int]) -> tuple[str, int, float]:
    """One confirm trial of ``arm``'s config with ``seed``: its best-on-select report mIoU."""
    arm, values, seed = job
    torch.set_num_threads(1)
    cfg = build_config({**values, "seed": seed}, origin=arm)
    data = build_datasets(cfg, eval_parts=["select", "report"])
    trainer = Trainer(cfg, data.source, data.target, data.eval_sets)
    best, weights = -1.0, None
    for step in range(1, cfg.num_steps + 1):
        trainer.step()
        if step % cfg.eval_every == 0 or step == cfg.num_steps:
            miou = trainer.evaluate("select")["miou"]
            if miou > best:
                best, weights = miou, copy.deepcopy(trainer.model.state_dict())
    trainer.model.load_state_dict(weights)
    return arm, seed, trainer.evaluate("report")["miou"]


def seeds_of(text: str) -> list[int]:
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        prog="quickstart_answer.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("study", type=Path, help="a finished study folder (results/quickstart)")
    parser.add_argument("--seeds", default="0-7", help="e.g. 0-7 or 0,1,2 (default 0-7)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    configs = {
        p.stem: yaml.safe_load(p.read_text()) for p in sorted((args.study / "best").glob("*.yaml"))
    }
    if not configs:
        print(
            f"error: {args.study}/best: no best configs (a finished study has them)",
            file=sys.stderr,
        )
        return 2
    seeds = seeds_of(args.seeds)
    jobs = [(arm, values, seed) for seed in seeds for arm, values in configs.items()]
    scores: dict[str, dict[int, float]] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for arm, seed, miou in pool.map(confirm_run, jobs):
            scores.setdefault(arm, {})[seed] = miou
            print(f"{arm:>14} seed {seed}: report mIoU {miou:.4f}", file=sys.stderr, flush=True)
    pairs = pd.read_parquet(args.study / "tables" / "comparisons.parquet").sort_values("order")
    out: dict[str, Any] = {"seeds": seeds, "arms": {}, "comparisons": []}
    for arm, by_seed in scores.items():
        out["arms"][arm] = {"mean": statistics.fmean(by_seed.values()), "per_seed": by_seed}
        print(f"{arm:<14} {statistics.fmean(by_seed.values()):.4f}")
    for row in pairs.itertuples():
        if row.arm in scores and row.baseline in scores:
            diff = paired_difference(scores[row.arm], scores[row.baseline])
            verdict = (
                "better" if diff.low > 0 else "worse" if diff.high < 0 else "cannot tell apart"
            )
            print(
                f"{row.arm} - {row.baseline}: {diff.mean:+.4f} [{diff.low:+.4f}, "
                f"{diff.high:+.4f}] over {diff.n} seeds: {verdict}"
            )
            out["comparisons"].append(
                {
                    "arm": row.arm,
                    "baseline": row.baseline,
                    "difference": diff.mean,
                    "low": diff.low,
                    "high": diff.high,
                    "seeds": diff.n,
                }
            )
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
