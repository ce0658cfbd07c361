"""``python -m reports.build results/<study> [-o FILE]``: one offline HTML ablation report.

Reads only the study's tables (``tables/*.parquet``), its ``study.yaml`` and
``provenance.json``: no Ray, no torch. plotly.js is embedded once, every user string is
escaped, and the same tables give the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports.layout import StudyFolder

# pandas and plotly load after the arguments parse (--help is instant).


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.build", description=__doc__)
    parser.add_argument("study_dir", type=Path, help="results/<study>")
    parser.add_argument("-o", "--output", type=Path, help="default: <study_dir>/report.html")
    args = parser.parse_args(argv)
    folder = StudyFolder(args.study_dir)
    if not folder.table("trials").is_file():
        print(
            f"error: {args.study_dir}: no tables (run python -m study.export {args.study_dir})",
            file=sys.stderr,
        )
        return 2
    from reports.report import build

    target = args.output or folder.report
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        path = build(args.study_dir, target)
    except OSError as exc:
        print(
            f"error: {target}: cannot write the report ({exc.strerror or exc}); "
            "write it elsewhere with -o FILE",
            file=sys.stderr,
        )
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
