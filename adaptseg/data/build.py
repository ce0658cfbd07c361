"""Datasets named by a config: the training source, the target and the evaluation splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch.utils.data import Dataset

from adaptseg.config import TrainConfig
from adaptseg.data.files import (
    CITYSCAPES_LABELS,
    SYNTHIA_LABELS,
    SegmentationFiles,
    cityscapes_samples,
    gta5_samples,
    split_part,
    synthia_samples,
)
from adaptseg.data.random import RandomSegDataset

RANDOM_LENGTHS = {"source": 64, "target": 64, "val": 16}


@dataclass(frozen=True)
class RunData:
    source: Dataset
    target: Dataset | None
    eval_sets: dict[str, Dataset]


def _source(cfg: TrainConfig) -> Dataset:
    if cfg.source == "random":
        return RandomSegDataset(
            RANDOM_LENGTHS["source"], cfg.input_size_source, cfg.num_classes, seed=cfg.seed
        )
    assert cfg.source_root is not None
    if cfg.source == "gta5":
        samples, labels = gta5_samples(cfg.source_root, cfg.source_list), CITYSCAPES_LABELS
    elif cfg.source == "synthia":
        samples, labels = synthia_samples(cfg.source_root, cfg.source_list), SYNTHIA_LABELS
    else:  # the oracle: Cityscapes train with its labels
        samples = cityscapes_samples(cfg.source_root, "train", True, cfg.source_list)
        labels = CITYSCAPES_LABELS
    return SegmentationFiles(
        samples,
        cfg.input_size_source,
        labels,
        cfg.preprocess,
        mirror=cfg.random_mirror,
        scale=cfg.random_scale,
    )


def _target(cfg: TrainConfig) -> Dataset:
    if cfg.target == "random":
        return RandomSegDataset(
            RANDOM_LENGTHS["target"],
            cfg.input_size_target,
            cfg.num_classes,
            seed=cfg.seed,
            domain=1,
            with_labels=False,
        )
    assert cfg.target_root is not None
    samples = cityscapes_samples(cfg.target_root, "train", False, cfg.target_list)
    return SegmentationFiles(
        samples,
        cfg.input_size_target,
        CITYSCAPES_LABELS,
        cfg.preprocess,
        with_labels=False,
        mirror=cfg.random_mirror,
        scale=cfg.random_scale,
    )


def _evaluation(cfg: TrainConfig, part: str) -> Dataset:
    if cfg.target == "random":
        return RandomSegDataset(
            RANDOM_LENGTHS["val"],
            cfg.input_size_target,
            cfg.num_classes,
            seed=cfg.seed + 7,
            domain=1,
        )
    assert cfg.target_root is not None
    samples = split_part(cityscapes_samples(cfg.target_root, "val", True), part)
    return SegmentationFiles(
        samples, cfg.input_size_target, CITYSCAPES_LABELS, cfg.preprocess, resize_labels=False
    )


def build_datasets(cfg: TrainConfig, eval_parts: Sequence[str] | None = None) -> RunData:
    """Build every dataset the run needs and decode one sample of each, before training.

    Raises:
        DataError: a missing root or folder, an empty split, an image without its label, an
            unreadable first sample or label ids outside the data set's range.
    """
    source = _source(cfg)
    target = _target(cfg) if cfg.use_target else None
    parts = list(eval_parts) if eval_parts is not None else [cfg.eval_split]
    eval_sets = {part: _evaluation(cfg, part) for part in parts}
    for dataset in (source, target, *eval_sets.values()):
        if isinstance(dataset, SegmentationFiles):
            dataset.check()
    return RunData(source, target, eval_sets)
