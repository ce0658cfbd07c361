"""Per-module mutation scores from mutmut's results, checked against the recorded floors.

    python .ci/mutation_scores.py [--record]

A mutant counts as killed when a test failed (or timed out) on it; ``survived`` and
``no tests`` count against the score; a mutant ``not checked`` means the run did not finish
(its module fails the check). Mutants listed in ``.ci/mutation_floor.json`` under
``equivalent`` (with the reason) are left out of both sides. ``--record`` writes the current
scores as the new floors.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

FLOOR = Path(__file__).with_name("mutation_floor.json")
LINE = re.compile(r"^\s*(?P<name>[\w.]+)__mutmut_\d+: (?P<status>.+)$")
KILLED = {"killed", "timeout", "segfault", "suspicious"}


def results() -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = {}
    for line in out.splitlines():
        match = LINE.match(line)
        if match:
            found[line.strip().split(":")[0]] = match["status"].strip()
    return found


def module_of(mutant: str) -> str:
    """``study.export.x_read_rows__mutmut_3`` -> ``study/export.py``."""
    parts = mutant.split(".")
    return "/".join(parts[:-1]) + ".py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--record", action="store_true", help="write the scores as the floors")
    parser.add_argument(
        "--partial", action="store_true",
        help="the run was limited to some mutants: skip the modules it did not touch",
    )  # fmt: skip
    args = parser.parse_args()
    recorded = json.loads(FLOOR.read_text()) if FLOOR.exists() else {}
    equivalent = recorded.get("equivalent", {})
    counts: dict[str, Counter] = {}
    unchecked: Counter = Counter()
    for mutant, status in results().items():
        if mutant in equivalent:
            continue
        if status == "not checked":
            unchecked[module_of(mutant)] += 1
            continue
        counts.setdefault(module_of(mutant), Counter())[
            "killed" if status in KILLED else "alive"
        ] += 1
    scores = {m: c["killed"] / (c["killed"] + c["alive"]) for m, c in sorted(counts.items())}
    if args.partial:  # a module none of whose mutants ran was left out on purpose
        unchecked = Counter({m: n for m, n in unchecked.items() if m in counts})
    failed = [f"{m} ({n} mutants not run)" for m, n in sorted(unchecked.items())]
    for module, score in scores.items():
        floor = recorded.get("floors", {}).get(module, 0.0)
        total = counts[module]["killed"] + counts[module]["alive"]
        print(f"{module:28} {score:6.1%} of {total:4d} mutants killed (floor {floor:.1%})")
        if score + 1e-9 < floor:
            failed.append(module)
    if args.record:
        floors = {m: round(s - 0.0005, 3) for m, s in scores.items() if m not in unchecked}
        FLOOR.write_text(json.dumps({"floors": floors, "equivalent": equivalent}, indent=2) + "\n")
    if failed:
        print(f"below the recorded floor: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
