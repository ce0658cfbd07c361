"""The study folder: where every file of a study lives, and where Ray keeps its experiments.

``<results>/<name>/`` holds the resolved spec, the Optuna database, the confirm plan, the
tables, the report and the best configs. Ray Tune's experiments (its records: snapshots, each
trial's reports, and the checkpoints) live in ``ray/`` there, or under ``storage:``
when the spec names one: a shared folder (a path every node sees) or a URI pyarrow reads
(``s3://bucket/prefix``, ``gs://...``; S3-compatible servers through ``AWS_ENDPOINT_URL``).

Every reader of Ray's records takes them from ``records_dir``: a local folder, which for a URI
is a mirror (``ray-records/``) of everything but the checkpoints. ``sync_records()`` brings that
mirror up to date (a download): the driver calls it once at each stage boundary, the live
report at most every ``checkpoint.sync_every_s`` (Ray uploads no more often), and
``python -m study.export`` once.
Experiment names: ``search-<arm>`` (then ``search-<arm>@2``... when a study grows, and
``search-<arm>+r2``... for the repeats of a search) and ``confirm`` (then ``confirm-2``...).
"""

from __future__ import annotations

import datetime as dt
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from adaptseg.fileio import atomic_write
from reports.layout import SPEC_FILE, StudyFolder
from study.ray_internals.snapshot import is_checkpoint_folder

if TYPE_CHECKING:
    from study.spec.schema import StudySpec

CONFIRM_EXPERIMENT = "confirm"
MIRROR = "ray-records"


@dataclass(frozen=True)
class StudyPaths(StudyFolder):
    """One study's folder (``root``) and where Ray's experiments are (``storage``: None for the
    study folder, a shared folder, or a URI). The files the report reads are named by
    ``reports.layout.StudyFolder``; the rest here."""

    storage: str | None = None

    @classmethod
    def for_spec(cls, spec: StudySpec, results: Path) -> StudyPaths:
        return cls((results / spec.name).resolve(), _absolute(spec.storage))

    @classmethod
    def of_study(cls, study_dir: Path) -> StudyPaths:
        """The paths of an existing study folder, from its saved spec (``storage`` included)."""
        saved = yaml.safe_load((study_dir / SPEC_FILE).read_text()) or {}
        return cls(study_dir.resolve(), _absolute(saved.get("storage")))

    # --- the study's own files (and, from StudyFolder: spec_file, provenance, report, tables) --
    @property
    def optuna_db(self) -> Path:
        return self.root / "optuna.db"

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.optuna_db}"

    @property
    def confirm_plan(self) -> Path:
        return self.root / "confirm_plan.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def best_configs(self) -> Path:
        return self.root / "best"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard's event files, one folder per trial (``trackers.tensorboard``)."""
        return self.root / "tensorboard"

    @property
    def mlflow_url(self) -> str:
        """MLflow's default store: SQLite in the study folder (``trackers.mlflow``)."""
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def errors_file(self) -> Path:
        """The trials Tune gave up on (``study.records.outcomes``)."""
        return self.root / "trial_errors.json"

    # --- Ray's experiments ------------------------------------------------------------------
    @property
    def remote(self) -> bool:
        """Ray's experiments are behind a URI (read through a local mirror)."""
        return self.storage is not None and "://" in self.storage

    @property
    def experiments(self) -> str:
        """Where Ray writes the experiments: a local path or a URI."""
        if self.storage is None:
            return str(self.root / "ray")
        return f"{self.storage.rstrip('/')}/{self.root.name}"

    def experiment(self, name: str) -> str:
        return f"{self.experiments}/{name}"

    @property
    def records_dir(self) -> Path:
        """A local folder holding Ray's records of every experiment (for a URI: the mirror, as
        the last ``sync_records`` left it)."""
        return Path(self.experiments) if not self.remote else self.root / MIRROR

    def sync_records(self) -> Path:
        """``records_dir``, for a URI first brought up to date (a download of what changed)."""
        if self.remote:
            _mirror(self.experiments, self.records_dir)
        return self.records_dir

    def move_aside(self) -> Path | None:
        """Rename the study folder to ``<name>.old-<time>`` (``-2``, ``-3``... when that exists,
        e.g. twice in one second); never deletes anything. Returns where it went."""
        if not self.root.exists():
            return None
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        target = self.root.with_name(f"{self.root.name}.old-{stamp}")
        number = 1
        while target.exists():
            number += 1
            target = self.root.with_name(f"{self.root.name}.old-{stamp}-{number}")
        self.root.rename(target)
        return target

    def upload(self, name: str, filename: str) -> None:
        """Write a record of experiment ``name`` that was repaired in the mirror back to the
        URI, where Ray restores from."""
        import pyarrow.fs as pafs

        filesystem, base = pafs.FileSystem.from_uri(self.experiment(name))
        data = (self.root / MIRROR / name / filename).read_bytes()
        with filesystem.open_output_stream(f"{base}/{filename}") as target:
            target.write(data)

    def search_parts(self, arm: str, repeat: int = 1) -> list[str]:
        """The experiments of one repeat of an arm's search that exist, in the order they were
        made."""
        folder = self.records_dir
        first = search_experiment(arm, repeat=repeat)
        names = [first] + [
            p.name for p in folder.glob(f"{first}@*") if p.name.rsplit("@", 1)[1].isdigit()
        ]
        found = [n for n in names if (folder / n).is_dir()]
        return sorted(found, key=lambda n: int(n.rsplit("@", 1)[1]) if "@" in n else 1)

    def confirm_parts(self) -> list[str]:
        """The confirm experiments that exist (``confirm``, ``confirm-2``, ...), in order."""
        folder = self.records_dir
        found = [p.name for p in folder.glob(f"{CONFIRM_EXPERIMENT}*") if p.is_dir()]
        valid = [n for n in found if n == CONFIRM_EXPERIMENT or n.rsplit("-", 1)[1].isdigit()]
        return sorted(valid, key=part_number)


def _absolute(storage: str | None) -> str | None:
    if storage is None or "://" in storage:
        return storage
    return str(Path(storage).absolute())


def search_experiment(arm: str, part: int = 1, repeat: int = 1) -> str:
    """The Ray experiment of an arm's search (``search-<arm>``); a study grown later adds
    ``search-<arm>@2`` ..., a repeat of the search ``search-<arm>+r2`` (then ``@2`` ...)."""
    base = f"search-{arm}" if repeat == 1 else f"search-{arm}+r{repeat}"
    return base if part == 1 else f"{base}@{part}"


def confirm_experiment(part: int) -> str:
    return CONFIRM_EXPERIMENT if part == 1 else f"{CONFIRM_EXPERIMENT}-{part}"


def part_number(name: str) -> int:
    """1 for ``confirm``, N for ``confirm-N``."""
    return 1 if name == CONFIRM_EXPERIMENT else int(name.rsplit("-", 1)[1])


def _mirror(uri: str, local: Path) -> None:
    """Copy every file under ``uri`` except checkpoints into ``local``, skipping files whose
    size and modification time are unchanged since the last copy (each written atomically)."""
    import pyarrow.fs as pafs

    filesystem, base = pafs.FileSystem.from_uri(uri)
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    for info in filesystem.get_file_info(selector):
        if info.type != pafs.FileType.File:
            continue
        relative = posixpath.relpath(info.path, base)
        if any(is_checkpoint_folder(part) for part in relative.split("/")):
            continue
        target = local / relative
        mtime = info.mtime.timestamp() if info.mtime is not None else None
        if target.is_file() and target.stat().st_size == info.size and mtime is not None:
            if abs(target.stat().st_mtime - mtime) < 1e-3:
                continue
        with filesystem.open_input_stream(info.path) as source:
            data = source.read()
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda handle, data=data: handle.write(data))
        if mtime is not None:
            os.utime(target, (mtime, mtime))
