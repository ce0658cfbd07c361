"""Datasets and training streams."""

from adaptseg.data.random import RandomSegDataset
from adaptseg.data.stream import InfiniteStream

__all__ = ["InfiniteStream", "RandomSegDataset"]
