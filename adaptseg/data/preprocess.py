"""Image and label decoding and preprocessing shared by every file-based dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import png
import torch
from PIL import Image

from adaptseg.data.errors import DataError

# The DeepLab-v2 (Caffe) init expects BGR, 0-255, minus this BGR mean (official IMG_MEAN).
CAFFE_MEAN_BGR = np.array((104.00698793, 116.66876762, 122.67891434), dtype=np.float32)
IMAGENET_MEAN = np.array((0.485, 0.456, 0.406), dtype=np.float32)
IMAGENET_STD = np.array((0.229, 0.224, 0.225), dtype=np.float32)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def open_image(path: Path) -> Image.Image:
    """Decode an image file completely. Any failure of the decoder on foreign bytes (PIL raises
    many kinds: OSError, SyntaxError, struct.error, a decompression-bomb error...) is the same
    user error: an unreadable image."""
    try:
        image = Image.open(path)
        image.load()
    except Exception as exc:  # noqa: BLE001 - see the docstring
        raise DataError(f"{path}: unreadable image ({_reason(exc)})") from None
    return image


def read_rgb(path: Path) -> Image.Image:
    return open_image(path).convert("RGB")


def _png_bit_depth_and_colour(path: Path) -> tuple[int, int] | None:
    try:
        with path.open("rb") as handle:
            header = handle.read(26)
    except OSError as exc:
        raise DataError(f"{path}: unreadable label ({_reason(exc)})") from None
    if len(header) < 26:
        return None
    if header[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return header[24], header[25]


def read_label_ids(path: Path, channel: int = 0) -> np.ndarray:
    """Label ids as an (H, W) integer array.

    8-bit and palette PNGs go through PIL (a palette PNG's indices are the ids, as in GTA5).
    16-bit colour PNGs (SYNTHIA's GT/LABELS) are decoded with pypng, because PIL reduces them to
    8 bits; the ids are in ``channel``.
    """
    kind = _png_bit_depth_and_colour(path) if path.suffix.lower() == ".png" else None
    if kind is not None and kind[0] == 16 and kind[1] in (2, 6):
        try:
            width, height, rows, info = png.Reader(filename=str(path)).read()
            planes = info["planes"]
            array = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
        except Exception as exc:  # noqa: BLE001 - as in open_image
            raise DataError(f"{path}: unreadable label ({_reason(exc)})") from None
        return array.reshape(height, width, planes)[..., channel].astype(np.int64)
    image = open_image(path)
    array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., channel]
    return array.astype(np.int64)


def image_to_tensor(image: Image.Image, mode: str) -> torch.Tensor:
    """(3, H, W) float32: ``caffe`` = BGR minus the DeepLab mean (0-255 scale, the official
    default); ``torchvision`` = RGB scaled to [0, 1] and normalised with ImageNet mean/std."""
    array = np.asarray(image, dtype=np.float32)
    if mode == "caffe":
        array = array[..., ::-1] - CAFFE_MEAN_BGR
    elif mode == "torchvision":
        array = (array / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    else:
        raise ValueError(f"`preprocess` must be 'caffe' or 'torchvision', got {mode!r}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
