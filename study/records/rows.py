"""The trial-row contract: what a trial reports to Ray Tune (one row per report, kept in the
trial's records), the statuses and names the tables use, and every table's columns.
The trainable writes rows by it, the export reads them by it, and the exporters' field lists
below derive from it.

A row's key is ``(step, split, model)``: a search trial reports one ``select`` row per
evaluation (model ``current``: the weights at that step); a confirm trial adds two ``report``
rows at its end (models ``final`` and ``best_on_select``); a trial that cannot go on reports
one last row with ``status`` diverged or errored (its model named the same, so that an
evaluation at the same step keeps its own key).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

import pyarrow as pa

from adaptseg.config import TrainConfig


class TrialStatus(StrEnum):
    """How a trial stands, in ``trials.parquet`` (from its rows and Ray's status)."""

    COMPLETED = "completed"  # trained every planned step
    EARLY_STOPPED = "early_stopped"  # ASHA stopped it
    DIVERGED = "diverged"  # a loss became NaN or infinite
    ERRORED = "errored"  # an exception (Ray's retries used up) or CUDA out of memory
    RUNNING = "running"  # not finished (still running, or interrupted)


class RowStatus(StrEnum):
    """A row's own ``status``: ``ok``, or the reason of a trial's last row."""

    OK = "ok"
    DIVERGED = TrialStatus.DIVERGED.value
    ERRORED = TrialStatus.ERRORED.value


ENDING = (RowStatus.DIVERGED, RowStatus.ERRORED)


class Split(StrEnum):
    SELECT = "select"  # model selection and ASHA
    REPORT = "report"  # held out: the confirm stage's reported numbers


class Model(StrEnum):
    CURRENT = "current"  # the weights at the row's step
    FINAL = "final"  # a confirm trial's weights after its last step
    BEST_ON_SELECT = "best_on_select"  # a confirm trial's best weights on the select split


DEFAULT_NUM_STEPS: int = TrainConfig.model_fields["num_steps"].default


def split_of(row: dict[str, Any]) -> str:
    return row.get("split", Split.SELECT)


def model_of(row: dict[str, Any]) -> str:
    return row.get("model", Model.CURRENT)


def row_key(row: dict[str, Any]) -> tuple[Any, str, str]:
    return row.get("step"), split_of(row), model_of(row)


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's Ray config as one mapping: a confirm trial's ``case`` (arm, stage, rank, seed
    and the sampled values it confirms) merged with the rest (the grid's own keys win)."""
    return {**config.get("case", {}), **{k: v for k, v in config.items() if k != "case"}}


def select_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if split_of(row) == Split.SELECT]


def ends_badly(row: dict[str, Any]) -> bool:
    return row.get("status") in ENDING


# How an Optuna trial names its Ray trial (the Optuna database is derived from Ray's records).
RAY_TRIAL_ATTR = "ray_trial_id"  # the Optuna trial's Ray Tune trial id, set when it is asked
ORPHAN_ATTR = "orphan"  # why an Optuna trial that no Ray trial stands for was failed
METRIC_NAME = "miou (select split)"  # the objective, as the dashboard names it

LOSSES = (
    "loss_seg_src_main",
    "loss_seg_src_aux",
    "loss_adv_trg_main",
    "loss_adv_trg_aux",
    "loss_ent_trg_main",
    "loss_ent_trg_aux",
    "loss_d_main",
    "loss_d_aux",
)

# What a trial reports with every evaluation (besides the keys that identify the row and one
# ``iou_<class>`` per Cityscapes class), with the type the tables store.
REPORTED: list[tuple[str, pa.DataType]] = [
    ("time_total_s", pa.float64()),
    ("compute_seconds", pa.float64()),
    ("images_per_second", pa.float64()),
    ("lr", pa.float64()),
    ("lr_d", pa.float64()),
    *[(loss, pa.float64()) for loss in LOSSES],
    ("miou", pa.float64()),
    ("peak_memory_gb", pa.float64()),
    ("status", pa.string()),
]

IDENTITY: list[tuple[str, pa.DataType]] = [
    ("study", pa.string()),
    ("experiment", pa.string()),
    ("arm", pa.string()),
    ("stage", pa.string()),
    ("trial_id", pa.string()),
    ("seed", pa.int64()),
]
KEY: list[tuple[str, pa.DataType]] = [
    ("split", pa.string()),
    ("model", pa.string()),
    ("step", pa.int64()),
]

EVAL_FIELDS = IDENTITY + KEY + REPORTED
CLASS_FIELDS: list[tuple[str, pa.DataType]] = [
    *[f for f in IDENTITY if f[0] != "experiment"],
    ("step", pa.int64()),
    ("split", pa.string()),
    ("model", pa.string()),
    ("class", pa.string()),
    ("iou", pa.float64()),
]
TRIAL_FIELDS: list[tuple[str, pa.DataType]] = [
    *IDENTITY,
    ("rank", pa.int64()),
    ("repeat", pa.int64()),  # which repeat of the arm's search (1: the first, the headline)
    ("current", pa.bool_()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("best_miou", pa.float64()),
    ("final_miou", pa.float64()),
    ("best_step", pa.int64()),
    ("step_reached", pa.int64()),
    ("max_steps", pa.int64()),
    ("report_miou_final", pa.float64()),
    ("report_miou_best_on_select", pa.float64()),
    ("wall_seconds", pa.float64()),
    ("compute_seconds", pa.float64()),
    ("peak_memory_gb", pa.float64()),
    ("device", pa.string()),
    ("amp_used", pa.string()),
    ("repairs", pa.string()),
    ("config", pa.string()),
    ("code_version", pa.string()),
]  # (and one column per searched parameter)
ARM_FIELDS: list[tuple[str, pa.DataType]] = [
    ("study", pa.string()),
    ("arm", pa.string()),
    ("order", pa.int64()),
    ("role", pa.string()),
    ("multi_level", pa.bool_()),
    ("adapt_space", pa.string()),
    ("method", pa.string()),  # what the arm trains with, in words (study.spec.arms.method)
    ("model", pa.string()),  # G as built: backbone and ASPP branches (a confound to see)
    ("source", pa.string()),  # the source data set's kind (gta5, synthia, ...)
    ("eval_classes", pa.int64()),  # the classes mIoU averages over: 19, 16 or 13
    ("use_target", pa.bool_()),
    ("num_steps", pa.int64()),
    ("searched", pa.string()),
    ("planned_search", pa.int64()),
    ("planned_confirm", pa.int64()),
]
COMPARISON_FIELDS: list[tuple[str, pa.DataType]] = [
    ("study", pa.string()),
    ("order", pa.int64()),
    ("arm", pa.string()),
    ("baseline", pa.string()),
]
