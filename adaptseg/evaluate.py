"""``python -m adaptseg.evaluate --checkpoint FILE --data ROOT``: the paper's evaluation protocol.

The main head only, images resized to ``--size`` (the official 512x1024), logits upsampled
bilinearly (align_corners) to each label's own size (1024x2048 on Cityscapes) and one confusion
matrix over the whole split, mIoU over 19 classes or SYNTHIA's 13 (``compute_iou.py``).

``FILE`` is an ``adaptseg.train`` / study checkpoint (its config says how to build G) or a bare
state dict in the official key layout, such as the released ``GTA2Cityscapes_multi-ed35151c.pth``
(``layer5``/``layer6`` heads, or ``features``/``classifier`` for DeepLab-VGG16; a ``module.``
prefix is dropped). For a bare state dict the backbone, the levels and the class count are read
from its keys, and the ASPP runs the official two branches (``--aspp-branches``) as the
released models need. ``--save-predictions DIR`` writes, per image, the train-id PNG named after
its ``leftImg8bit`` file and ``<name>_color.png``, as the official script does.
Exit codes: 0 done, 2 bad input.
"""

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
from adaptseg.data.files import CITYSCAPES_LABELS, SegmentationFiles, cityscapes_samples
from adaptseg.data.labels import PALETTE
from adaptseg.data.preprocess import DataError
from adaptseg.evaluation import ConfusionMatrix, class_names, metrics_from_confusion
from adaptseg.fileio import atomic_write, atomic_write_text
from adaptseg.models import build_generator
from adaptseg.torchfile import TorchFileError, read_torch_file
from adaptseg.trainer import resolve_device

BACKBONE_BY_LAYER3_BLOCKS = {23: "resnet101", 6: "resnet50", 1: "small"}


class CheckpointFormatError(ValueError):
    """The checkpoint cannot be read or does not fit the model it describes."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m adaptseg.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint or state dict (.pth)")
    parser.add_argument("--data", required=True, help="Cityscapes root (leftImg8bit/, gtFine/)")
    parser.add_argument("--split", default="val", help="Cityscapes split folder (default: val)")
    parser.add_argument("--save-predictions", metavar="DIR", help="write train-id + colour PNGs")
    parser.add_argument("--size", default="512x1024", help="input HxW (default: 512x1024)")
    parser.add_argument("--classes", type=int, choices=(19, 13), default=19,
                        help="mIoU over 19 classes or SYNTHIA's 13 (default: 19)")  # fmt: skip
    parser.add_argument("--aspp-branches", type=int, choices=(2, 4), default=2,
                        help="bare state dicts: 2 = the official forward (default)")  # fmt: skip
    parser.add_argument("--weights", choices=("final", "best_on_select"), default="final",
                        help="study trial checkpoints also hold the best-on-select G")  # fmt: skip
    parser.add_argument("--preprocess", choices=("caffe", "torchvision"), default="caffe")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--limit", type=int, help="evaluate the first N images only")
    parser.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    return parser


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


def load_model(
    path: Path, aspp_branches: int = 2, weights: str = "final"
) -> tuple[nn.Module, dict[str, Any]]:
    """G with the checkpoint's weights, and how it was built. ``weights="best_on_select"``
    takes the best-on-select G that a study trial's checkpoint carries beside its final one.

    Raises:
        CheckpointFormatError: unreadable, or a key the model needs is missing or misshapen.
    """
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
        raw = {"model": best["model"], "config": config}
    state = _state_dict(raw)
    if isinstance(config, Mapping):  # an adaptseg checkpoint: its own config builds G
        settings = {k: config[k] for k in ("backbone", "multi_level", "num_classes")}
        settings.update(aspp_branches=config["aspp_branches"], bn_mode=config["bn_mode"])
    else:
        settings = {**describe_state(state), "aspp_branches": aspp_branches, "bn_mode": "train"}
    model = build_generator(
        settings["num_classes"], settings["backbone"], settings["multi_level"],
        settings["aspp_branches"], settings["bn_mode"],
    )  # fmt: skip
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
) -> dict[str, float]:
    """One confusion matrix over the whole split, logits compared at each label's size."""
    confusion = ConfusionMatrix(num_classes, device)
    model.to(device).eval()
    with torch.inference_mode():
        for index in tqdm(range(len(dataset)), desc="evaluate", unit="image"):
            image, label = dataset[index]
            _, logits = model(image.unsqueeze(0).to(device))
            label = label.to(device)
            logits = F.interpolate(logits, size=label.shape, mode="bilinear", align_corners=True)
            prediction = logits.argmax(1)[0]
            confusion.update(label, prediction)
            if save_dir is not None:
                array = prediction.cpu().numpy()
                save_prediction(save_dir, dataset.samples[index].image, array)
    return metrics_from_confusion(confusion, classes)


def format_table(metrics: Mapping[str, float], num_classes: int) -> str:
    """Per-class IoU x 100, two decimals, then the mIoU (as ``compute_iou.py`` prints)."""
    names = [n for n in class_names(num_classes) if f"iou_{n}" in metrics]
    width = max(len(n) for n in names)
    lines = [f"{name:<{width}}  {100 * metrics[f'iou_{name}']:6.2f}" for name in names]
    lines.append(f"{'mIoU':<{width}}  {100 * metrics['miou']:6.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    checkpoint = Path(args.checkpoint)
    try:
        try:
            size = parse_size(args.size)
        except ValueError as exc:
            raise ValueError(f"--size: {exc}") from None
        if args.limit is not None and args.limit <= 0:
            raise ValueError(f"--limit: expected a positive integer, got {args.limit}")
        samples = cityscapes_samples(args.data, args.split, with_labels=True)[: args.limit]
        dataset = SegmentationFiles(
            samples, size, CITYSCAPES_LABELS, args.preprocess, resize_labels=False
        )
        dataset.check()
        try:
            model, settings = load_model(checkpoint, args.aspp_branches, args.weights)
        except CheckpointFormatError as exc:
            raise ValueError(f"{checkpoint}: {exc}") from None
        device = resolve_device(args.device)
    except (ValueError, DataError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    save_dir = Path(args.save_predictions) if args.save_predictions else None
    print(
        f"{checkpoint.name}: {settings['backbone']}, "
        f"{'multi' if settings['multi_level'] else 'single'}-level, "
        f"{settings['aspp_branches']} ASPP branches; {len(dataset)} images of {args.split}",
        file=sys.stderr,
    )
    metrics = evaluate(model, dataset, device, settings["num_classes"], args.classes, save_dir)
    print(format_table(metrics, settings["num_classes"]))
    if args.json:
        record = {"checkpoint": str(checkpoint), "weights": args.weights, "split": args.split,
                  **settings, **metrics}  # fmt: skip
        atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
