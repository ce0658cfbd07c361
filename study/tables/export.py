"""Ray Tune's trial results -> the study's Parquet tables (``reports.layout.TABLES``).

Built from each trial's reports (every reported key) and the newest experiment snapshot (trial
status and errors), as ``study.records.trials`` reads them. Works while the study runs (rows
then lag by up to one flush). Rows replayed after a hard kill are dropped: for each (step,
split, model) the row of the last restore segment wins. Schemas are explicit, so an all-empty
column keeps its type and tables from different runs concatenate. Files are written
atomically. ``python -m study.export`` is the command line.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from adaptseg.data.labels import CITYSCAPES_CLASSES
from adaptseg.fileio import atomic_write
from reports.layout import table_file
from study.records.folder import StudyPaths
from study.records.outcomes import load_errored
from study.records.plan import case_key, current_cases, current_ranks
from study.records.rows import (
    ARM_FIELDS,
    CLASS_FIELDS,
    COMPARISON_FIELDS,
    DEFAULT_NUM_STEPS,
    EVAL_FIELDS,
    TRIAL_FIELDS,
    Model,
    RowStatus,
    Split,
    TrialStatus,
    ends_badly,
    flat_config,
    model_of,
    select_rows,
    split_of,
)
from study.records.trials import as_int, experiment_trials, read_rows, trial_status, trial_steps
from study.spec.arms import arm_rows, comparison_rows
from study.spec.schema import StudySpec

SCHEMA_VERSION = "1"
EXPORTED = ("trials", "evals", "class_iou", "arms", "comparisons")  # status: study.tables.live
KIND_TYPES = {
    "uniform": pa.float64(),
    "log_uniform": pa.float64(),
    "int": pa.int64(),
    "categorical": pa.string(),
}


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class Tables:
    """Accumulates rows for the three tables of one study."""

    def __init__(
        self,
        study: str,
        space: dict[str, dict],
        code_version: str,
        ranks: dict[tuple, int] | None,
    ) -> None:
        self.study, self.space, self.code_version = study, space, code_version
        self.ranks = ranks  # case key -> rank in the current confirm plan (None: no plan file)
        self.evals: list[dict] = []
        self.classes: list[dict] = []
        self.trials: list[dict] = []

    def add(self, experiment: str, trial: dict, max_steps: int) -> None:
        rows = read_rows(trial["dir"])
        case = trial["config"].get("case")
        config = flat_config(trial["config"])
        if case and self.ranks is not None:
            config["rank"] = self.ranks.get(case_key(case))  # None: no longer planned
        arm, stage = config.get("arm"), config.get("stage", "search")
        max_steps = trial_steps(config, max_steps)
        seed = as_int(rows[0].get("seed")) if rows else as_int(config.get("seed"))
        base = {
            "study": self.study,
            "arm": arm,
            "stage": stage,
            "trial_id": trial["trial_id"],
            "seed": seed,
        }
        for row in rows:
            split, model = split_of(row), model_of(row)
            record = {
                **base,
                "experiment": experiment,
                "split": split,
                "model": model,
                "step": as_int(row.get("step")),
                "status": row.get("status", RowStatus.OK),
                "time_total_s": _finite(row.get("time_total_s")),
            }
            for name, kind in EVAL_FIELDS:
                if kind == pa.float64() and name not in record:
                    record[name] = _finite(row.get(name))
            self.evals.append(record)
            for name in CITYSCAPES_CLASSES:
                if f"iou_{name}" in row:
                    self.classes.append(
                        {
                            **base,
                            "step": record["step"],
                            "split": split,
                            "model": model,
                            "class": name,
                            "iou": _finite(row[f"iou_{name}"]),
                        }
                    )
        self.trials.append(self._trial_row(experiment, trial, base, config, rows, max_steps))

    def _trial_row(self, experiment, trial, base, config, rows, max_steps) -> dict:
        select = select_rows(rows)
        mious = [(_finite(r.get("miou")), r.get("step")) for r in select]
        mious = [(m, s) for m, s in mious if m is not None]
        best = max(mious, default=(None, None))
        report = {
            r.get("model"): _finite(r.get("miou")) for r in rows if split_of(r) == Split.REPORT
        }
        last = rows[-1] if rows else {}
        reported = last.get("error") if ends_badly(last) else None
        status = trial_status(trial["status"], rows, max_steps)
        # An error file of an earlier attempt stays in the folder; it is the trial's error only
        # while the trial still ends in error.
        failed = status in (TrialStatus.ERRORED, TrialStatus.DIVERGED)
        error = (trial["error"] or reported) if failed else None
        rank = as_int(config.get("rank"))
        out = {
            **base,
            "experiment": experiment,
            "rank": rank,
            "repeat": as_int(config.get("repeat")) or 1,
            # A confirm trial of an earlier plan generation (a grown study) is not current.
            "current": base["stage"] != "confirm" or rank is not None,
            "status": status,
            "error": error,
            "best_miou": best[0],
            "best_step": as_int(best[1]),
            "final_miou": mious[-1][0] if mious else None,
            "step_reached": max((as_int(r.get("step")) or 0 for r in rows), default=0),
            "max_steps": max_steps,
            "report_miou_final": report.get(Model.FINAL),
            "report_miou_best_on_select": report.get(Model.BEST_ON_SELECT),
            "wall_seconds": _finite(last.get("time_total_s")),
            "compute_seconds": _finite(last.get("compute_seconds")),
            "peak_memory_gb": max(
                (m for m in (_finite(r.get("peak_memory_gb")) for r in rows) if m is not None),
                default=None,
            ),
            "device": last.get("device"),
            "amp_used": last.get("amp_used"),
            # What a resume repaired (a checkpoint that could not be read), oldest first.
            "repairs": "; ".join(dict.fromkeys(r["repair"] for r in rows if r.get("repair")))
            or None,
            "config": json.dumps(config, sort_keys=True),
            "code_version": self.code_version,
        }
        for name, dist in self.space.items():
            value = config.get(name)
            out[name] = (
                str(value) if value is not None and _column_type(dist) == pa.string() else value
            )
        return out

    def trial_schema(self) -> pa.Schema:
        extra = [(name, _column_type(dist)) for name, dist in self.space.items()]
        return table_schema(TRIAL_FIELDS + extra)


def _column_type(dist: dict) -> pa.DataType:
    """float64 / int64 for ranges; for categorical choices the type they share, else string."""
    kind = next(k for k in KIND_TYPES if dist.get(k) is not None)
    if kind != "categorical":
        return KIND_TYPES[kind]
    choices = dist["categorical"]
    if all(isinstance(c, bool) for c in choices):
        return pa.bool_()
    if all(isinstance(c, int) and not isinstance(c, bool) for c in choices):
        return pa.int64()
    if all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices):
        return pa.float64()
    return pa.string()


def table_schema(fields: list[tuple[str, pa.DataType]]) -> pa.Schema:
    return pa.schema(fields, metadata={"adaptseg.schema_version": SCHEMA_VERSION})


def write_table(rows: list[dict], schema: pa.Schema, path: Path) -> None:
    """Write with an explicit schema, atomically (temporary file, then rename)."""
    columns = {field.name: [row.get(field.name) for row in rows] for field in schema}
    table = pa.Table.from_pydict(columns, schema=schema)
    atomic_write(path, lambda handle: pq.write_table(table, handle))


def export(
    study: StudyPaths | Path,
    live: dict[str, dict[str, str]] | None = None,
    out: Path | None = None,
) -> dict[str, int]:
    """Write the tables (``TABLES``) of a study (its folder, or its ``StudyPaths``) into ``out``
    (default ``<study folder>/tables``); returns the row counts (and how many trials errored).
    ``live``: experiment name -> trial id -> Ray status, from a running driver."""
    paths = study if isinstance(study, StudyPaths) else StudyPaths.of_study(study)
    live = live or {}
    spec = yaml.safe_load(paths.spec_file.read_text())
    provenance = json.loads(paths.provenance.read_text()) if paths.provenance.exists() else {}
    tables = Tables(
        spec["name"],
        spec.get("search", {}).get("space", {}),
        provenance.get("code_version", "unknown"),
        current_ranks(current_cases(paths.confirm_plan)) if paths.confirm_plan.exists() else None,
    )
    max_steps = {arm: _arm_steps(spec, arm) for arm in spec["arms"]}
    records = paths.records_dir
    errored = load_errored(paths.errors_file)
    for experiment in sorted(records.iterdir()) if records.is_dir() else []:
        for trial in experiment_trials(
            experiment, errored.get(experiment.name), live.get(experiment.name)
        ):
            config = flat_config(trial["config"])
            if "arm" not in config:
                continue  # recorded by Tune without its config (kill -9): it never trained
            tables.add(experiment.name, trial, max_steps.get(config.get("arm"), 0))
    arms, pairs = arm_tables(spec)
    out = out or paths.tables
    write_table(tables.trials, tables.trial_schema(), table_file(out, "trials"))
    write_table(tables.evals, table_schema(EVAL_FIELDS), table_file(out, "evals"))
    write_table(tables.classes, table_schema(CLASS_FIELDS), table_file(out, "class_iou"))
    write_table(arms, table_schema(ARM_FIELDS), table_file(out, "arms"))
    write_table(pairs, table_schema(COMPARISON_FIELDS), table_file(out, "comparisons"))
    return {
        "trials": len(tables.trials),
        "evals": len(tables.evals),
        "class_iou": len(tables.classes),
        "arms": len(arms),
        "comparisons": len(pairs),
        "errored": sum(row["status"] == TrialStatus.ERRORED for row in tables.trials),
    }


def arm_tables(raw: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """The arms and comparison rows of a saved spec. A spec this version cannot validate (an
    older study) still gets its arms, by name, with no role and no comparisons."""
    try:
        spec = StudySpec.model_validate(raw)
        return arm_rows(spec), comparison_rows(spec)
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError and ConfigError
        print(
            f"warning: study.yaml: {' '.join(str(exc).split())[:300]}; arms exported without "
            "roles",
            file=sys.stderr,
        )
        names = list(raw.get("arms") or {})
        return [
            {"study": raw.get("name"), "arm": arm, "order": i} for i, arm in enumerate(names)
        ], []


def _arm_steps(spec: dict, arm: str) -> int:
    values = {**spec.get("train", {}), **spec["arms"][arm]}
    return int(values.get("num_steps", DEFAULT_NUM_STEPS))
