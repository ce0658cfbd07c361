"""Datasets named by a config: the training source, the target and the evaluation splits."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from adaptseg.config import TrainConfig
from adaptseg.data.random import RandomSegDataset

RANDOM_LENGTHS = {"source": 64, "target": 64, "val": 16}


@dataclass(frozen=True)
class RunData:
    source: Dataset
    target: Dataset | None
    eval_sets: dict[str, Dataset]


def build_datasets(cfg: TrainConfig) -> RunData:
    """Build (and cheaply validate) every dataset the run needs, before any training starts."""
    source = RandomSegDataset(
        RANDOM_LENGTHS["source"], cfg.input_size_source, cfg.num_classes, seed=cfg.seed
    )
    target = RandomSegDataset(
        RANDOM_LENGTHS["target"], cfg.input_size_target, cfg.num_classes,
        seed=cfg.seed, domain=1, with_labels=False,
    )  # fmt: skip
    val = RandomSegDataset(
        RANDOM_LENGTHS["val"], cfg.input_size_target, cfg.num_classes, seed=cfg.seed + 7, domain=1
    )
    return RunData(source, target if cfg.use_target else None, {cfg.eval_split: val})
