"""``python -m study.run STUDY.yaml``: the ablation study, searched and confirmed with Ray Tune.

    python -m study.run STUDY.yaml [--results DIR] [--set key=value ...] [--fresh] [--dry-run]
                                   [--address A] [--node-ip-address IP]

For each arm a search stage (OptunaSearch + ASHA, ``search.num_samples`` trials), then one
confirm stage that re-runs each arm's top ``confirm.top_k`` configs on the ``confirm.seeds`` at
full budget. The study directory ``<results>/<name>/`` holds the resolved spec, the Optuna
SQLite database, Ray Tune's experiments and the best config of each arm. Running the same
command again resumes. Exit codes: 0 done, 1 incomplete (planned confirm trials missing or
errored), 2 bad input or another driver running this study, 3 no space left on the study's
disk (resumable once there is), 130 interrupted (resumable).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from adaptseg.config import ConfigError
from adaptseg.data.errors import DataError
from study import errors
from study.errors import Interrupted, NoSpace, SpecError, StudyIncomplete, StudyLocked
from study.records.folder import StudyPaths
from study.spec.growth import Growth, decide_growth
from study.spec.loading import load_spec
from study.spec.schema import StudySpec

# Ray, torch, pyarrow and the report load only after the arguments parse (the imports inside
# the functions below), so that --help answers at once.

log = logging.getLogger("study.run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("study", type=Path, help="the study YAML")
    parser.add_argument("--results", type=Path, default=Path("results"), help="default results/")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key, e.g. search.num_samples=4",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start over; the old study directory is moved aside, not deleted",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="validate everything, print the plan and its cost"
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="with --dry-run: time a few steps of each arm's model here first (minutes at the "
        "paper's sizes on a CPU), and keep the figure for later dry-runs",
    )
    parser.add_argument("--address", help="join this Ray cluster ('auto' or host:port)")
    parser.add_argument("--node-ip-address", help="this node's IP for a Ray started here")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the whole study at a tiny size (small backbone, 4 steps, 2 trials per arm, 2 "
        "seeds) on its own data, into <results>/<name>-smoke: try a spec before booking a "
        "cluster",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also Ray Tune's status tables and Optuna's per-trial logs",
    )
    return parser


def growth_of(paths: StudyPaths, resolved: dict[str, Any], origin: str, fresh: bool) -> Growth:
    """What this run does to the study folder's existing study (``spec.growth``)."""
    if fresh or not paths.spec_file.exists():
        return Growth()
    from study.records.trials import finished_in_study

    saved = yaml.safe_load(paths.spec_file.read_text()) or {}
    return decide_growth(saved, resolved, finished_in_study(paths.records_dir), paths.root, origin)


def finished_text(spec: StudySpec, paths: StudyPaths) -> str:
    """The ablation table for the terminal, and where the report, the tables and the trackers
    are."""
    from reports.report import Report

    table = Report(paths.root).ablation_text()
    lines = [
        table,
        "(confirm stage, report split, best-on-select model; 95% intervals over the confirm "
        "seeds, for the configs each arm's search chose)",
        f"report: {paths.report}",
        f"tables: {paths.tables}",
    ]
    if spec.trackers.tensorboard:
        lines.append(f"tensorboard: tensorboard --logdir {paths.tensorboard}")
    if spec.trackers.mlflow is not None:
        uri = spec.trackers.mlflow.tracking_uri or paths.mlflow_url
        lines.append(f"mlflow: mlflow ui --backend-store-uri {uri}")
    return "\n".join(lines)


def resume_command(argv: list[str]) -> str:
    args = [a for a in argv if a != "--fresh"]
    return " ".join(["python -m study.run", *map(shlex.quote, args)])


def already_complete(spec: StudySpec, paths: StudyPaths) -> bool:
    """A complete study says so and starts nothing; its Optuna database is checked as a start
    checks it (rebuilt, saying so in one line, when missing or damaged)."""
    from study.tables.live import is_complete

    if not is_complete(paths):
        return False
    from study.records.optuna_db import ensure

    if os.access(paths.root, os.W_OK) and (note := ensure(paths, spec)):
        print(note, file=sys.stderr)
    print(
        f"study {spec.name} is complete; its report is {paths.report} (grow it by raising "
        "search.num_samples, confirm.seeds or confirm.top_k, or adding an arm; --fresh starts "
        "over)"
    )
    return True


def dry_run(spec: StudySpec, paths: StudyPaths, args: argparse.Namespace, growth: Growth) -> None:
    from study.stages.dryrun import describe_plan
    from study.stages.preflight import preflight_resources

    checked = preflight_resources(spec, args.address, args.node_ip_address)
    print(describe_plan(spec, paths, args.calibrate))
    print(checked)
    if growth.start_over:
        print(
            f"starts the study over: none of its trials had finished, and "
            f"{', '.join(growth.start_over)} changed (the old one is kept beside it)"
        )
    if growth.grown:
        print(f"grows the existing study: {', '.join(growth.grown)}")


def run(spec: StudySpec, paths: StudyPaths, args: argparse.Namespace, growth: Growth) -> None:
    """Take the study's lock (moving an old study aside first when asked), then drive it."""
    from study.stages.driver import run_study
    from study.stages.lock import StudyLock, describe

    if growth.grown:
        print(f"growing the study in {paths.root}: {', '.join(growth.grown)}", file=sys.stderr)
    lock = StudyLock(paths.root)
    if args.fresh or growth.start_over:
        if (holder := lock.live_holder()) is not None:  # never move a running study aside
            raise StudyLocked(
                f"{paths.root}: another driver is running this study ({describe(holder)}); "
                "wait for it to end or stop it"
            )
        if (moved := paths.move_aside()) is not None:
            why = (
                f"none of its trials had finished and {', '.join(growth.start_over)} changed; "
                if growth.start_over
                else ""
            )
            print(f"starting over: {why}moved the old study to {moved}", file=sys.stderr)
    with lock:
        if lock.note:
            print(lock.note, file=sys.stderr)
        run_study(spec, paths, spec.dump(), args.address, args.node_ip_address, args.verbose)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.calibrate and not args.dry_run:
        print("error: --calibrate: expected with --dry-run (it times the models, then plans)",
              file=sys.stderr)  # fmt: skip
        return errors.EXIT_BAD_INPUT
    try:
        spec = load_spec(args.study, args.overrides, smoke=args.smoke)
        paths = StudyPaths.for_spec(spec, args.results)
        growth = growth_of(paths, spec.dump(), str(args.study), args.fresh)
        unchanged = growth == Growth() and not args.fresh
        if unchanged and not args.dry_run and already_complete(spec, paths):
            return errors.EXIT_OK
        from study.stages.preflight import check_data, check_init_weights, check_writable

        check_writable(paths, str(args.study))
        try:
            check_data(spec, generate=not args.dry_run)
        except DataError as exc:
            raise SpecError(f"{args.study}: data: {exc}") from None
        check_init_weights(spec, str(args.study))
        if args.dry_run:
            dry_run(spec, paths, args, growth)
            return errors.EXIT_OK
        run(spec, paths, args, growth)
    except (SpecError, ConfigError, DataError, StudyLocked) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return errors.EXIT_BAD_INPUT
    except StudyIncomplete as exc:
        print(f"error: {exc}", file=sys.stderr)
        return errors.EXIT_INCOMPLETE
    except NoSpace as exc:
        print(exc.line(), file=sys.stderr)
        return errors.EXIT_NO_SPACE
    except OSError as exc:  # a write of the driver itself, before Ray started or after it ended
        from study.stages.diskspace import caused_by_no_space, no_space

        if not caused_by_no_space(exc):
            raise
        print(no_space(args.results.absolute()).line(), file=sys.stderr)
        return errors.EXIT_NO_SPACE
    except (Interrupted, KeyboardInterrupt):
        print(f"interrupted; resume with: {resume_command(argv)}", file=sys.stderr)
        return errors.EXIT_INTERRUPTED
    print(finished_text(spec, paths))
    return errors.EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
