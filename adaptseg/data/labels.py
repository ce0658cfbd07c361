"""Label-id maps of GTA5, Cityscapes and SYNTHIA, as lookup tables (never Python loops)."""

from __future__ import annotations

import numpy as np

IGNORE = 255
# The 19 Cityscapes evaluation classes, in train-id order (the tables' class names).
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "light",
    "sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
# Cityscapes label id -> train id (the official info.json `label2train`); GTA5 uses the same ids.
CITYSCAPES_ID_TO_TRAIN: dict[int, int] = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
# The subsets SYNTHIA -> Cityscapes is evaluated on, by train id: 16 classes (the 19 less
# terrain, truck and train, which SYNTHIA lacks) and 13 (also less wall, fence and pole), as the
# SYNTHIA papers report them (FDA's evaluation_multi.py, TLL). mIoU over a subset is the mean of
# those classes' IoUs, never a rescaled 19-class mIoU.
CLASS_SUBSETS: dict[int, tuple[int, ...]] = {
    19: tuple(range(19)),
    16: (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18),
    13: (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18),
}
CITYSCAPES_MAX_ID = 33  # label ids of GTA5 and Cityscapes lie in 0..33
# SYNTHIA-RAND-CITYSCAPES GT/LABELS id -> Cityscapes train id (as TLL's synthia.py).
SYNTHIA_ID_TO_TRAIN: dict[int, int] = {
    3: 0,
    4: 1,
    2: 2,
    21: 3,
    5: 4,
    7: 5,
    15: 6,
    9: 7,
    6: 8,
    16: 9,
    1: 10,
    10: 11,
    17: 12,
    8: 13,
    18: 14,
    19: 15,
    20: 16,
    12: 17,
    11: 18,
}
SYNTHIA_MAX_ID = 22
# The Cityscapes colours of the 19 train ids (for colour predictions and the generator).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)
TRAIN_TO_CITYSCAPES_ID: dict[int, int] = {t: i for i, t in CITYSCAPES_ID_TO_TRAIN.items()}


def lookup_table(id_to_train: dict[int, int], size: int = 65536) -> np.ndarray:
    """A uint8 table: ``table[label_id]`` is the train id, 255 for every unmapped id."""
    table = np.full(size, IGNORE, dtype=np.uint8)
    for label_id, train_id in id_to_train.items():
        table[label_id] = train_id
    return table
