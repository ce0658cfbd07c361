"""mIoU over the class subsets a SYNTHIA study reports: 16 classes (without terrain, truck and
train, which SYNTHIA lacks) and 13 (also without wall, fence and pole), each the mean of those
classes' own IoUs from the tables, never a rescaled 19-class mIoU."""

from __future__ import annotations

import math

import pandas as pd

from adaptseg.data.labels import CITYSCAPES_CLASSES, CLASS_SUBSETS

SYNTHIA_SUBSETS = (16, 13)


def subset_names(classes: int) -> set[str]:
    return {CITYSCAPES_CLASSES[i] for i in CLASS_SUBSETS[classes]}


def subset_scores(
    class_iou: pd.DataFrame, headline: pd.DataFrame, classes: int
) -> dict[str, dict[int, float]]:
    """Per arm, seed -> mIoU over ``classes`` of the headline trials (report split,
    best-on-select weights): the nanmean of the subset's per-class IoUs, as the evaluation's
    own mIoU is (a class absent from both ground truth and prediction has no IoU)."""
    names = subset_names(classes)
    rows = class_iou[
        class_iou["trial_id"].isin(headline["trial_id"])
        & (class_iou["split"] == "report")
        & (class_iou["model"] == "best_on_select")
        & class_iou["class"].isin(names)
    ]
    seeds = headline.set_index("trial_id")[["arm", "seed"]]
    out: dict[str, dict[int, float]] = {}
    for trial_id, group in rows.groupby("trial_id"):
        values = [v for v in group["iou"] if v is not None and not math.isnan(v)]
        if values:
            arm, seed = seeds.loc[trial_id, "arm"], int(seeds.loc[trial_id, "seed"])
            out.setdefault(arm, {})[seed] = sum(values) / len(values)
    return out
