"""File-based segmentation datasets in the official layouts: GTA5, Cityscapes, SYNTHIA."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from adaptseg.data.labels import (
    CITYSCAPES_ID_TO_TRAIN,
    CITYSCAPES_MAX_ID,
    IGNORE,
    SYNTHIA_ID_TO_TRAIN,
    SYNTHIA_MAX_ID,
    lookup_table,
)
from adaptseg.data.preprocess import DataError, image_to_tensor, read_label_ids, read_rgb

CITYSCAPES_TABLE = lookup_table(CITYSCAPES_ID_TO_TRAIN)
SYNTHIA_TABLE = lookup_table(SYNTHIA_ID_TO_TRAIN)
SCALE_RANGE = (0.5, 1.5)  # DeepLab's random-scale range


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path | None


@dataclass(frozen=True)
class LabelSpec:
    """How a data set stores its labels: id table, largest valid id, channel of the ids."""

    table: np.ndarray
    max_id: int
    channel: int = 0


CITYSCAPES_LABELS = LabelSpec(CITYSCAPES_TABLE, CITYSCAPES_MAX_ID)
SYNTHIA_LABELS = LabelSpec(SYNTHIA_TABLE, SYNTHIA_MAX_ID, channel=0)


class SegmentationFiles(Dataset):
    """Images (and labels) read from files, resized and preprocessed like the official loaders.

    Images are resized BICUBIC to ``size`` (HxW). Training labels are resized NEAREST to the
    same size; evaluation labels (``resize_labels=False``) keep their own size, as the official
    protocol compares at the label resolution. Items are ``(image, label)`` or, without labels,
    ``image``. ``load(index, rng)`` applies the optional mirror / random-scale augmentation.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        size: tuple[int, int],
        labels: LabelSpec = CITYSCAPES_LABELS,
        preprocess: str = "caffe",
        with_labels: bool = True,
        resize_labels: bool = True,
        mirror: bool = False,
        scale: bool = False,
    ) -> None:
        self.samples, self.size, self.labels = list(samples), size, labels
        self.preprocess, self.with_labels, self.resize_labels = (
            preprocess,
            with_labels,
            resize_labels,
        )
        self.mirror, self.scale = mirror, scale

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return self.load(index, None)

    def train_ids(self, path: Path) -> np.ndarray:
        ids = read_label_ids(path, self.labels.channel)
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) > self.labels.max_id):
            bad = int(ids.max()) if int(ids.max()) > self.labels.max_id else int(ids.min())
            raise DataError(
                f"{path}: label id {bad} is outside this data set's ids 0..{self.labels.max_id}"
            )
        return self.labels.table[ids]

    def load(self, index: int, rng: np.random.Generator | None):
        sample = self.samples[index]
        height, width = self.size
        image = read_rgb(sample.image).resize((width, height), Image.BICUBIC)
        label = None
        if self.with_labels:
            assert sample.label is not None
            label = Image.fromarray(self.train_ids(sample.label))
            if self.resize_labels:
                label = label.resize((width, height), Image.NEAREST)
        if rng is not None and self.scale:
            image, label = _random_scale_crop(image, label, self.size, rng)
        if rng is not None and self.mirror and rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
            label = label.transpose(Image.FLIP_LEFT_RIGHT) if label is not None else None
        tensor = image_to_tensor(image, self.preprocess)
        if label is None:
            return tensor
        return tensor, torch.from_numpy(np.asarray(label, dtype=np.int64).copy())

    def check(self) -> None:
        """Decode the first sample: a cheap build-time check that the files are what we think."""
        self.load(0, None)


def _random_scale_crop(image, label, size, rng):
    """Rescale by a factor in SCALE_RANGE, then crop (or pad: image black, label 255) back."""
    height, width = size
    factor = rng.uniform(*SCALE_RANGE)
    new = (max(1, round(width * factor)), max(1, round(height * factor)))
    image = image.resize(new, Image.BICUBIC)
    label = label.resize(new, Image.NEAREST) if label is not None else None
    canvas_image = Image.new("RGB", (max(new[0], width), max(new[1], height)))
    canvas_image.paste(image)
    left = int(rng.integers(0, canvas_image.width - width + 1))
    top = int(rng.integers(0, canvas_image.height - height + 1))
    box = (left, top, left + width, top + height)
    if label is not None:
        canvas_label = Image.new("L", canvas_image.size, IGNORE)
        canvas_label.paste(label)
        label = canvas_label.crop(box)
    return canvas_image.crop(box), label


# --- layouts ----------------------------------------------------------------------------------
def is_dir(path: Path) -> bool:
    """``Path.is_dir`` that says False (instead of raising) for a name too long or with a NUL."""
    return os.path.isdir(path)


def is_file(path: Path) -> bool:
    return os.path.isfile(path)


def _root(root: str | Path, what: str) -> Path:
    path = Path(root)
    if not is_dir(path):
        raise DataError(f"{path}: {what} root does not exist")
    return path


def _names_from_list(list_file: str | Path) -> list[str]:
    path = Path(list_file)
    if not is_file(path):
        raise DataError(f"{path}: list file does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the list file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: the list file is not UTF-8 text") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    for name in names:
        if "\0" in name or name.startswith("/") or ".." in Path(name).parts:
            raise DataError(f"{path}: {name[:80]!r} is not a file name inside the data set")
    return names


def _pair(images: list[Path], label_for, what: str, folder: Path) -> list[Sample]:
    if not images:
        raise DataError(f"{folder}: no images found for {what}")
    samples = []
    for image in images:
        if not is_file(image):
            raise DataError(f"{image}: image listed for {what} does not exist")
        label = label_for(image) if label_for is not None else None
        if label is not None and not is_file(label):
            raise DataError(f"{image}: its label {label} does not exist")
        samples.append(Sample(image, label))
    return samples


def _flat_samples(
    root: str | Path, what: str, images: str, labels: str, list_file: str | Path | None
) -> list[Sample]:
    """Layouts with every image in one folder and its label under the same name in another."""
    root = _root(root, what)
    images_dir = root / images
    if not is_dir(images_dir):
        raise DataError(f"{images_dir}: {what} {images} folder does not exist")
    if list_file is not None:
        found = [images_dir / name for name in _names_from_list(list_file)]
    else:
        found = sorted(images_dir.glob("*.png"))
    return _pair(found, lambda p: root / labels / p.name, what, images_dir)


def gta5_samples(root: str | Path, list_file: str | Path | None = None) -> list[Sample]:
    """``root/images/<name>`` with ``root/labels/<name>`` (Cityscapes label ids)."""
    return _flat_samples(root, "GTA5", "images", "labels", list_file)


def synthia_samples(root: str | Path, list_file: str | Path | None = None) -> list[Sample]:
    """SYNTHIA-RAND-CITYSCAPES: ``root/RGB/<name>`` with ``root/GT/LABELS/<name>``."""
    return _flat_samples(root, "SYNTHIA", "RGB", "GT/LABELS", list_file)


def cityscapes_label_path(root: Path, image: Path) -> Path:
    stem = image.name.removesuffix("_leftImg8bit.png")
    split, city = image.parent.parent.name, image.parent.name
    return root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"


def cityscapes_samples(
    root: str | Path, split: str, with_labels: bool, list_file: str | Path | None = None
) -> list[Sample]:
    """``leftImg8bit/<split>/<city>/*_leftImg8bit.png``, labels in ``gtFine/<split>/<city>/``."""
    root = _root(root, "Cityscapes")
    split_dir = root / "leftImg8bit" / split
    if not is_dir(split_dir):
        raise DataError(f"{split_dir}: Cityscapes split folder does not exist")
    if list_file is not None:
        images = [split_dir / name for name in _names_from_list(list_file)]
    else:
        images = sorted(split_dir.glob("*/*_leftImg8bit.png"))
    label_for = (lambda p: cityscapes_label_path(root, p)) if with_labels else None
    return _pair(images, label_for, f"Cityscapes {split}", split_dir)


def in_select_part(image: Path) -> bool:
    """The model-selection split: an image is in ``select`` when the first byte of the SHA-1
    of its file name is even, else in ``report``. Stable under adding or removing files."""
    return hashlib.sha1(image.name.encode()).digest()[0] % 2 == 0


def split_part(samples: Sequence[Sample], part: str) -> list[Sample]:
    """``select``, ``report`` or ``all`` of an evaluation set."""
    if part == "all":
        return list(samples)
    if part not in ("select", "report"):
        raise ValueError(f"`part` must be 'select', 'report' or 'all', got {part!r}")
    chosen = [s for s in samples if in_select_part(s.image) == (part == "select")]
    if not chosen:
        raise DataError(f"the {part!r} part of the evaluation set is empty")
    return chosen
