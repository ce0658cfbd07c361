"""``python -m study.export results/<study> [-o DIR]``: the study's tables rebuilt from Ray
Tune's records (``study.tables.export``), at any time, also while the study runs; and its
Optuna database rebuilt when it does not hold what Ray's records say (``study.records.optuna_db``)
and no driver is running it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from reports.layout import SPEC_FILE, TABLES_DIR

# The tables, Ray's records and the spec's validation load after the arguments parse, so that
# --help answers at once (without pyarrow, Ray or torch).


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.export", description=__doc__)
    parser.add_argument("study_dir", type=Path, help="results/<study>")
    parser.add_argument(
        "-o", "--output", type=Path, help="folder for the tables (default: <study_dir>/tables)"
    )
    args = parser.parse_args(argv)
    if not (args.study_dir / SPEC_FILE).is_file():
        print(f"error: {args.study_dir}: not a study directory (no {SPEC_FILE})", file=sys.stderr)
        return 2
    from study.records.folder import StudyPaths
    from study.tables.export import EXPORTED, export

    paths = StudyPaths.of_study(args.study_dir)
    out = args.output or args.study_dir / TABLES_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths.sync_records()
        counts = export(paths, out=out)
    except OSError as exc:
        print(
            f"error: {out}: cannot write the tables ({exc.strerror or exc}); "
            "write them elsewhere with -o DIR",
            file=sys.stderr,
        )
        return 2
    tables = ", ".join(f"{name}.parquet {counts[name]} rows" for name in EXPORTED)
    print(f"wrote {out}: {tables} ({counts['errored']} errored trials)")
    if note := rebuild_optuna_db(args.study_dir):
        print(note)
    return 0


def rebuild_optuna_db(study_dir: Path) -> str | None:
    """The Optuna database rebuilt from Ray's records when it does not hold what they say (only
    in a study folder this user can write and no driver runs, whose searcher owns the database
    while it runs; a study this version cannot validate is left as is)."""
    from study.records.folder import StudyPaths
    from study.records.optuna_db import ensure
    from study.spec.schema import StudySpec
    from study.stages.lock import StudyLock

    if not os.access(study_dir, os.W_OK) or StudyLock(study_dir).live_holder() is not None:
        return None
    try:
        spec = StudySpec.model_validate(yaml.safe_load((study_dir / SPEC_FILE).read_text()))
    except (ValueError, TypeError):
        return None
    return ensure(StudyPaths.of_study(study_dir), spec)


if __name__ == "__main__":
    raise SystemExit(main())
