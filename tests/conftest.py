"""Shared fixtures: tiny CPU configs and datasets."""

from __future__ import annotations

import pytest
import torch

from adaptseg.config import TrainConfig, build_config
from adaptseg.data import RandomSegDataset

torch.set_num_threads(2)

TINY = {
    "source": "random",
    "target": "random",
    "backbone": "small",
    "ndf": 8,
    "input_size_source": "64x64",
    "input_size_target": "64x64",
    "optimizer": "adam",
    "lr": 1e-3,
    "num_steps": 100,
    "eval_every": 10,
    "num_workers": 0,
    "device": "cpu",  # bit-exact comparisons hold on CPU; a GPU machine runs these there too
}


def tiny_config(**overrides) -> TrainConfig:
    return build_config({**TINY, **overrides}, origin="test")


def tiny_data(length: int = 6, size: tuple[int, int] = (64, 64)):
    source = RandomSegDataset(length, size, seed=0)
    target = RandomSegDataset(length, size, seed=0, domain=1, with_labels=False)
    val = RandomSegDataset(3, size, seed=1, domain=1)
    return source, target, {"select": val}


@pytest.fixture
def tiny_cfg() -> TrainConfig:
    return tiny_config()
