"""The paper's evaluation protocol on any checkpoint: what ``python -m adaptseg.evaluate``
runs (the command line and its documentation are in ``adaptseg/evaluate.py``)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from adaptseg.config import parse_size
from adaptseg.data.files import (
    CITYSCAPES_LABELS,
    SegmentationFiles,
    cityscapes_samples,
    split_part,
)
from adaptseg.data.labels import CLASS_SUBSETS, PALETTE
from adaptseg.data.preprocess import DataError
from adaptseg.evaluation import ConfusionMatrix, class_names, metrics_from_confusion
from adaptseg.fileio import atomic_write, atomic_write_text
from adaptseg.models import build_generator
from adaptseg.torchfile import TorchFileError, read_torch_file
from adaptseg.trainer import resolve_device

BACKBONE_BY_LAYER3_BLOCKS = {23: "resnet101", 6: "resnet50", 1: "small"}


class CheckpointFormatError(ValueError):
    """The checkpoint cannot be read or does not fit the model it describes."""


OFFICIAL = {
    "input_size_target": "512x1024",
    "eval_classes": 19,
    "aspp_branches": 2,
    "preprocess": "caffe",
    "eval_limit": None,
    "target_root": None,
    "align_corners": True,
}
FLAGS = {
    "size": "input_size_target",
    "classes": "eval_classes",
    "aspp_branches": "aspp_branches",
    "preprocess": "preprocess",
    "limit": "eval_limit",
    "data": "target_root",
}


def protocol(config: Mapping[str, Any] | None, args: argparse.Namespace) -> tuple[dict, list]:
    """The evaluation settings: the checkpoint's config (else the official protocol), then the
    flags given; returns the settings and one note per flag that changed the checkpoint's."""
    settings = dict(OFFICIAL)
    if config is not None:
        settings.update({key: config.get(key, value) for key, value in OFFICIAL.items()})
        if settings["eval_classes"] == "auto":
            settings["eval_classes"] = 13 if config.get("source") == "synthia" else 19
    notes = []
    for flag, key in FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if config is not None and str(value) != str(settings[key]):
            notes.append(
                f"--{flag.replace('_', '-')} {value} overrides the checkpoint's "
                f"{key} {settings[key]}"
            )
        settings[key] = value
    return settings, notes


def _state_dict(raw: Any) -> dict[str, Tensor]:
    if isinstance(raw, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(raw.get(key), Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping) or not raw:
        raise CheckpointFormatError("expected a state dict of tensors")
    if not all(isinstance(v, Tensor) for v in raw.values()):
        raise CheckpointFormatError("expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in raw.items()}


def describe_state(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """Backbone, levels and classes of a state dict in the official key layout."""
    if "classifier.conv2d_list.0.weight" in state:
        classes = state["classifier.conv2d_list.0.weight"].shape[0]
        return {"backbone": "vgg16", "multi_level": False, "num_classes": int(classes)}
    if "layer6.conv2d_list.0.weight" not in state:
        raise CheckpointFormatError(
            "no DeepLab head found (neither layer6.conv2d_list nor classifier.conv2d_list keys)"
        )
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"layer3\.(\d+)\.", k))}
    count = max(blocks, default=-1) + 1
    if count not in BACKBONE_BY_LAYER3_BLOCKS:
        raise CheckpointFormatError(f"a ResNet with {count} blocks in layer3 is not supported")
    return {
        "backbone": BACKBONE_BY_LAYER3_BLOCKS[count],
        "multi_level": "layer5.conv2d_list.0.weight" in state,
        "num_classes": int(state["layer6.conv2d_list.0.weight"].shape[0]),
    }


def read_checkpoint(
    path: Path, weights: str = "final"
) -> tuple[dict[str, Tensor], Mapping[str, Any] | None]:
    """The G weights a file holds (final, or a study trial's best-on-select) and the config it
    carries (None for a bare state dict)."""
    try:
        raw = read_torch_file(path)
    except TorchFileError as exc:
        raise CheckpointFormatError(str(exc).removeprefix(f"{path}: ")) from None
    config = raw.get("config") if isinstance(raw, Mapping) else None
    if weights == "best_on_select":
        best = raw.get("best") if isinstance(raw, Mapping) else None
        if not isinstance(best, Mapping) or not isinstance(best.get("model"), Mapping):
            raise CheckpointFormatError(
                "holds no best-on-select weights (only study trial checkpoints do)"
            )
        raw = {"model": best["model"]}
    return _state_dict(raw), config if isinstance(config, Mapping) else None


def load_model(
    state: Mapping[str, Tensor], config: Mapping[str, Any] | None, aspp_branches: int
) -> tuple[nn.Module, dict[str, Any]]:
    """G with the given weights, built from the checkpoint's config or from the keys.

    Raises:
        CheckpointFormatError: a key the model needs is missing or misshapen.
    """
    if config is not None:  # an adaptseg checkpoint: its own config builds G
        settings = {k: config[k] for k in ("backbone", "multi_level", "num_classes", "bn_mode")}
    else:
        settings = {**describe_state(state), "bn_mode": "train"}
    settings["aspp_branches"] = aspp_branches
    model = build_generator(
        settings["num_classes"],
        settings["backbone"],
        settings["multi_level"],
        settings["aspp_branches"],
        settings["bn_mode"],
    )
    own = model.state_dict()
    needed = [k for k in own if not k.endswith("num_batches_tracked")]
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointFormatError(
            f"{len(missing)} of the model's {len(needed)} tensors are missing, e.g. {missing[0]}"
        )
    wrong = [k for k in needed if state[k].shape != own[k].shape]
    if wrong:
        raise CheckpointFormatError(
            f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
            f"the model expects {tuple(own[wrong[0]].shape)}"
        )
    model.load_state_dict({k: state[k] for k in needed}, strict=False)
    return model, settings


def _write_png(path: Path, image: Image.Image) -> None:
    atomic_write(path, lambda handle: image.save(handle, format="PNG"))


def save_prediction(directory: Path, image_path: Path, prediction: np.ndarray) -> None:
    """``<leftImg8bit name>`` (train ids, uint8) and ``<name>_color.png`` (the palette)."""
    ids = Image.fromarray(prediction.astype(np.uint8), mode="L")
    _write_png(directory / image_path.name, ids)
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(PALETTE)] = PALETTE
    _write_png(directory / f"{image_path.stem}_color.png", Image.fromarray(palette[prediction]))


def evaluate(
    model: nn.Module,
    dataset: SegmentationFiles,
    device: torch.device,
    num_classes: int,
    classes: int,
    save_dir: Path | None = None,
    align_corners: bool = True,
) -> dict[str, float]:
    """One confusion matrix over the whole split, logits compared at each label's size."""
    confusion = ConfusionMatrix(num_classes, device)
    model.to(device).eval()
    with torch.inference_mode():
        for index in tqdm(range(len(dataset)), desc="evaluate", unit="image"):
            image, label = dataset[index]
            _, logits = model(image.unsqueeze(0).to(device))
            label = label.to(device)
            logits = F.interpolate(
                logits, size=label.shape, mode="bilinear", align_corners=align_corners
            )
            prediction = logits.argmax(1)[0]
            confusion.update(label, prediction)
            if save_dir is not None:
                array = prediction.cpu().numpy()
                save_prediction(save_dir, dataset.samples[index].image, array)
    return metrics_from_confusion(confusion, classes)


def format_table(
    metrics: Mapping[str, float], num_classes: int, evaluated: int | None = None
) -> str:
    """Per-class IoU x 100, two decimals, then the mIoU (as ``compute_iou.py`` prints), over
    the ``evaluated`` classes (SYNTHIA's 16 or 13: only theirs are listed)."""
    names = list(class_names(num_classes))
    if evaluated is not None and evaluated != num_classes:
        names = [names[i] for i in CLASS_SUBSETS[evaluated]]
    names = [n for n in names if f"iou_{n}" in metrics]
    width = max(len(n) for n in names)
    lines = [f"{name:<{width}}  {100 * metrics[f'iou_{name}']:6.2f}" for name in names]
    lines.append(f"{'mIoU':<{width}}  {100 * metrics['miou']:6.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """The evaluation ``python -m adaptseg.evaluate`` runs, on its parsed arguments."""
    checkpoint = Path(args.checkpoint)
    try:
        try:
            state, config = read_checkpoint(checkpoint, args.weights)
        except CheckpointFormatError as exc:
            raise ValueError(f"{checkpoint}: {exc}") from None
        settings, notes = protocol(config, args)
        if settings["target_root"] is None:
            raise ValueError("--data: the checkpoint names no data root; give the Cityscapes root")
        try:
            size = parse_size(settings["input_size_target"])
        except ValueError as exc:
            raise ValueError(f"--size: {exc}") from None
        limit = settings["eval_limit"]
        if limit is not None and limit <= 0:
            raise ValueError(f"--limit: expected a positive integer, got {limit}")
        samples = cityscapes_samples(settings["target_root"], args.folder, with_labels=True)
        samples = split_part(samples, args.split)[:limit]
        dataset = SegmentationFiles(
            samples, size, CITYSCAPES_LABELS, settings["preprocess"], resize_labels=False
        )
        dataset.check()
        try:
            model, built = load_model(state, config, settings["aspp_branches"])
        except CheckpointFormatError as exc:
            raise ValueError(f"{checkpoint}: {exc}") from None
        device = resolve_device(args.device)
    except (ValueError, DataError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(note, file=sys.stderr)
    save_dir = Path(args.save_predictions) if args.save_predictions else None
    print(
        f"{checkpoint.name}: {built['backbone']}, "
        f"{'multi' if built['multi_level'] else 'single'}-level, "
        f"{built['aspp_branches']} ASPP branches, {settings['preprocess']} preprocessing, "
        f"{size[0]}x{size[1]}; {len(dataset)} images of {args.folder} ({args.split})",
        file=sys.stderr,
    )
    metrics = evaluate(
        model,
        dataset,
        device,
        built["num_classes"],
        int(settings["eval_classes"]),
        save_dir,
        bool(settings["align_corners"]),
    )
    print(format_table(metrics, built["num_classes"], int(settings["eval_classes"])))
    if args.json:
        record = {
            "checkpoint": str(checkpoint),
            "weights": args.weights,
            "split": args.split,
            **built,
            **metrics,
        }
        atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")
    return 0
