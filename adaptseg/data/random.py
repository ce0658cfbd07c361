"""A small built-in dataset of random block scenes, for smoke runs that need no files."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class RandomSegDataset(Dataset):
    """Deterministic per index: a coarse random label map and an image of its class colours.

    ``domain`` shifts the colours (0 = source look, 1 = target look) so that a source-trained
    model sees a gap. Images come out preprocessed (about zero mean, unit scale), labels hold a
    few 255 pixels like real data.
    """

    def __init__(
        self,
        length: int,
        size: tuple[int, int],
        num_classes: int = 19,
        seed: int = 0,
        domain: int = 0,
        with_labels: bool = True,
    ) -> None:
        self.length, self.size, self.num_classes = length, size, num_classes
        self.seed, self.domain, self.with_labels = seed, domain, with_labels
        palette = np.random.default_rng(12345).uniform(-1, 1, (num_classes, 3))
        shift = np.random.default_rng(54321).uniform(-0.5, 0.5, (num_classes, 3))
        self.palette = (palette + domain * shift).astype(np.float32)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.domain, index])
        height, width = self.size
        coarse = rng.integers(0, self.num_classes, (max(1, height // 8), max(1, width // 8)))
        label = np.kron(coarse, np.ones((8, 8), dtype=np.int64))[:height, :width]
        label = np.pad(label, ((0, height - label.shape[0]), (0, width - label.shape[1])), "edge")
        image = self.palette[label] + rng.normal(0, 0.1, (height, width, 3)).astype(np.float32)
        label[rng.random((height, width)) < 0.01] = 255
        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.with_labels:
            return image_t
        return image_t, torch.from_numpy(label.astype(np.int64))
