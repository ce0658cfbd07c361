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
import datetime as dt
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from adaptseg.config import ConfigError, parse_size
from adaptseg.data.errors import DataError
from study.diskspace import EXIT_NO_SPACE, NoSpace, caused_by_no_space
from study.dryrun import describe_plan
from study.folder import StudyPaths
from study.growth import spec_changes
from study.lock import StudyLocked
from study.plan import Interrupted, StudyIncomplete
from study.spec import SpecError, StudySpec, arm_config, load_spec

log = logging.getLogger("study.run")
EXIT_OK, EXIT_INCOMPLETE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
UNFINISHED = ("PENDING", "RUNNING", "PAUSED")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.run", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("study", type=Path, help="the study YAML")
    parser.add_argument("--results", type=Path, default=Path("results"), help="default results/")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a spec key, e.g. search.num_samples=4",
    )  # fmt: skip
    parser.add_argument(
        "--fresh", action="store_true",
        help="start over; the old study directory is moved aside, not deleted",
    )  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true", help="validate everything, print the plan"
    )
    parser.add_argument("--address", help="join this Ray cluster ('auto' or host:port)")
    parser.add_argument("--node-ip-address", help="this node's IP for a Ray started here")
    parser.add_argument(
        "--smoke", action="store_true",
        help="the whole study at a tiny size (small backbone, 4 steps, 2 trials per arm, 2 "
        "seeds) on its own data, into <results>/<name>-smoke: try a spec before booking a "
        "cluster",
    )  # fmt: skip
    parser.add_argument(
        "--verbose", action="store_true",
        help="also Ray Tune's status tables and Optuna's per-trial logs",
    )  # fmt: skip
    return parser


def check_growth(paths: StudyPaths, resolved: dict[str, Any], origin: str) -> list[str]:
    """A study that exists may only grow (study.growth.spec_changes); returns what grows. A study
    in which no trial has finished takes any change: it starts over (``StartOver``)."""
    if not paths.spec_file.exists():
        return []
    old = yaml.safe_load(paths.spec_file.read_text()) or {}
    grown, refused = spec_changes(old, resolved)
    if refused and not finished_trials(paths):
        raise StartOver(refused)
    if refused:
        raise SpecError(
            f"{origin}: the study in {paths.root} was started with other values for "
            f"{', '.join(refused)}, which would make its finished trials incomparable; "
            "rerun with --fresh to start over (the old one is kept)"
        )
    return grown


class StartOver(Exception):
    """The spec changed keys that decide results, but no trial had finished: nothing to keep."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(", ".join(keys))
        self.keys = keys


def finished_trials(paths: StudyPaths) -> int:
    """Trials Ray Tune finished in the study's experiments (from its newest snapshots)."""
    from study.records import experiment_trials

    experiments = paths.records()
    if not experiments.is_dir():
        return 0
    return sum(
        trial["status"] == "TERMINATED"
        for experiment in experiments.iterdir()
        if experiment.is_dir()
        for trial in experiment_trials(experiment)
    )


def check_writable(paths: StudyPaths, origin: str) -> None:
    """The study directory must be creatable: checked before anything is written or started."""
    existing = paths.root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError(
            f"{origin}: cannot write the study directory {paths.root} "
            f"({existing} is not a writable folder); choose another --results"
        )


def move_aside(paths: StudyPaths) -> Path | None:
    """Rename the study directory to ``<name>.old-<time>`` (``-2``, ``-3``... when that exists,
    e.g. twice in one second); never deletes anything."""
    if not paths.root.exists():
        return None
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = paths.root.with_name(f"{paths.root.name}.old-{stamp}")
    number = 1
    while target.exists():
        number += 1
        target = paths.root.with_name(f"{paths.root.name}.old-{stamp}-{number}")
    paths.root.rename(target)
    return target


def check_data(spec: StudySpec, generate: bool) -> None:
    """Build every arm's datasets (cheap checks) so bad roots fail before Ray starts."""
    from adaptseg.data.build import build_datasets
    from adaptseg.data.synthetic import ensure_benchmark

    if spec.data.synthetic is not None:
        if not generate:
            return
        synthetic = spec.data.synthetic
        ensure_benchmark(
            Path(synthetic.root),
            synthetic.seed,
            parse_size(synthetic.size),
            tuple(synthetic.counts),
        )
    for arm in spec.arms:
        build_datasets(arm_config(spec, arm), eval_parts=["select", "report"])


def check_init_weights(spec: StudySpec, origin: str) -> None:
    """Every arm's ``init_weights`` file loads and fills its backbone (the 95% rule), and its
    discriminator files fit, once per file and model: a bad file would otherwise fail every
    trial of the study."""
    from adaptseg.models import (
        FCDiscriminator,
        InitWeightsError,
        build_generator,
        load_discriminator_weights,
        load_init_weights,
    )

    checked = set()
    for arm in spec.arms:
        cfg = arm_config(spec, arm)
        files = (cfg.init_weights, cfg.init_discriminator_aux, cfg.init_discriminator_main)
        key = (cfg.backbone, cfg.multi_level, cfg.adapt_space, cfg.ndf, cfg.num_classes, files,
               cfg.min_init_match)  # fmt: skip
        if not any(files) or key in checked:
            continue
        checked.add(key)
        model = build_generator(cfg.num_classes, cfg.backbone, cfg.multi_level)
        try:
            if cfg.init_weights is not None:
                load_init_weights(model, cfg.init_weights, cfg.min_init_match)
            for level, path in (("aux", files[1]), ("main", files[2])):
                if path is not None:
                    feature = cfg.adapt_space == "feature"
                    channels = model.feature_channels[level] if feature else cfg.num_classes
                    load_discriminator_weights(FCDiscriminator(channels, cfg.ndf), path)
        except InitWeightsError as exc:
            raise SpecError(f"{origin}: init weights (arm {arm}): {exc}") from None


def complete(paths: StudyPaths) -> bool:
    """Finished, reported, and nothing to retry (an errored trial is retried by a rerun)."""
    needed = (paths.summary, paths.report, paths.tables / "trials.parquet")
    if not all(path.is_file() for path in needed):
        return False
    import pyarrow.parquet as pq

    from study.rows import TrialStatus

    statuses = pq.read_table(needed[2], columns=["status"]).column("status").to_pylist()
    return TrialStatus.ERRORED not in statuses and TrialStatus.RUNNING not in statuses


def finished_text(paths: StudyPaths) -> str:
    """The ablation table for the terminal, and where the report and tables are."""
    from reports.report import Report

    table = Report(paths.root).ablation_text()
    return (
        f"{table}\n(confirm stage, report split, best-on-select model; 95% intervals over "
        f"seeds)\nreport: {paths.report}\ntables: {paths.tables}"
    )


def resume_command(argv: list[str]) -> str:
    args = [a for a in argv if a != "--fresh"]
    return " ".join(["python -m study.run", *map(shlex.quote, args)])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        spec = load_spec(args.study, args.overrides, smoke=args.smoke)
        paths = StudyPaths.for_spec(spec, args.results)
        resolved = spec.dump()
        start_over: list[str] = []
        try:
            grown = [] if args.fresh else check_growth(paths, resolved, str(args.study))
        except StartOver as change:
            grown, start_over = [], change.keys
        unchanged = not grown and not args.fresh and not start_over
        if unchanged and not args.dry_run and complete(paths):  # reading needs no writing
            print(
                f"study {spec.name} is complete; its report is {paths.report} "
                "(grow it by raising search.num_samples, confirm.seeds or confirm.top_k, or "
                "adding an arm; --fresh starts over)"
            )
            return EXIT_OK
        check_writable(paths, str(args.study))
        try:
            check_data(spec, generate=not args.dry_run)
        except DataError as exc:
            raise SpecError(f"{args.study}: data: {exc}") from None
        check_init_weights(spec, str(args.study))
        if args.dry_run:
            from study.preflight import preflight_resources

            checked = preflight_resources(spec, args.address, args.node_ip_address)
            print(describe_plan(spec, paths))
            print(checked)
            if start_over:
                print(
                    f"starts the study over: none of its trials had finished, and "
                    f"{', '.join(start_over)} changed (the old one is kept beside it)"
                )
            if grown:
                print(f"grows the existing study: {', '.join(grown)}")
            return EXIT_OK
        if grown:
            print(f"growing the study in {paths.root}: {', '.join(grown)}", file=sys.stderr)
        from study.driver import run_study
        from study.lock import StudyLock, describe

        lock = StudyLock(paths.root)
        if args.fresh or start_over:
            if (holder := lock.live_holder()) is not None:  # never move a running study aside
                raise StudyLocked(
                    f"{paths.root}: another driver is running this study ({describe(holder)}); "
                    "wait for it to end or stop it"
                )
            if (moved := move_aside(paths)) is not None:
                why = (
                    f"none of its trials had finished and {', '.join(start_over)} changed; "
                    if start_over
                    else ""
                )
                print(f"starting over: {why}moved the old study to {moved}", file=sys.stderr)
        with lock:
            if lock.note:
                print(lock.note, file=sys.stderr)
            run_study(spec, paths, resolved, args.address, args.node_ip_address, args.verbose)
    except (SpecError, ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StudyLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StudyIncomplete as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
    except NoSpace as exc:
        print(exc.line(), file=sys.stderr)
        return EXIT_NO_SPACE
    except OSError as exc:  # a write of the driver itself, before Ray started or after it ended
        if not caused_by_no_space(exc):
            raise
        print(NoSpace(args.results.absolute()).line(), file=sys.stderr)
        return EXIT_NO_SPACE
    except (Interrupted, KeyboardInterrupt):
        print(f"interrupted; resume with: {resume_command(argv)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(finished_text(paths))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
