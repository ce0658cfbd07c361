"""``python -m adaptseg.evaluate --checkpoint FILE --data ROOT``: the paper's evaluation protocol.

The main head only, images resized to the input size (the official 512x1024), logits
upsampled bilinearly to each label's own size (1024x2048 on Cityscapes) and one confusion
matrix over the whole split, mIoU over 19 classes or SYNTHIA's 16 or 13 (``compute_iou.py``).

``FILE`` is an ``adaptseg.train`` / study checkpoint or a bare state dict in the official key
layout, such as the released ``GTA2Cityscapes_multi-ed35151c.pth`` (``layer5``/``layer6``
heads, or ``features``/``classifier`` for DeepLab-VGG16; a ``module.`` prefix is dropped).

* A checkpoint that carries its config is evaluated as it was trained: G, the ASPP branches,
  the preprocessing, the target input size, ``align_corners``, the class set, the evaluation
  limit and the data root all come from the config. A flag that differs says so on one line.
* For a bare state dict the backbone, the levels and the class count are read from its keys;
  everything else is the official protocol (two ASPP branches as the released models need,
  caffe preprocessing, 512x1024, align_corners, 19 classes), or the flags.

``--split all`` (the default) is the whole Cityscapes ``val`` folder, the paper's protocol;
``select`` and ``report`` are the study's halves of it. ``--save-predictions DIR`` writes, per
image, the train-id PNG named after its ``leftImg8bit`` file and ``<name>_color.png``, as the
official script does. Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse

# The evaluation itself (torch, the models) loads after the arguments parse: --help is instant.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m adaptseg.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--checkpoint", required=True, help="checkpoint or state dict (.pt, .pth)")
    add(
        "--data",
        help="Cityscapes root (leftImg8bit/, gtFine/); default: the checkpoint's target_root",
    )
    add(
        "--split",
        choices=("all", "select", "report"),
        default="all",
        help="all of Cityscapes val (default, the paper's protocol), or the study's select or "
        "report half of it",
    )
    add("--folder", default="val", help="the Cityscapes split folder to read (default: val)")
    add("--save-predictions", metavar="DIR", help="write train-id and colour PNGs per image")
    add("--size", help="input HxW (default: the checkpoint's input_size_target, else 512x1024)")
    add(
        "--classes",
        type=int,
        choices=(19, 16, 13),
        help="mIoU over 19 classes or SYNTHIA's 16 or 13 (default: the checkpoint's, else 19)",
    )
    add(
        "--aspp-branches",
        type=int,
        choices=(2, 4),
        help="ASPP branches summed (default: the checkpoint's, else 2, the official forward)",
    )
    add(
        "--weights",
        choices=("final", "best_on_select"),
        default="final",
        help="study trial checkpoints also hold the best-on-select G (default: final)",
    )
    add(
        "--preprocess",
        choices=("caffe", "torchvision"),
        help="input preprocessing (default: the checkpoint's, else caffe, the official one)",
    )
    add(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto (default): CUDA when present",
    )
    add(
        "--limit",
        type=int,
        help="evaluate the first N images only (default: the checkpoint's eval_limit, else all)",
    )
    add("--json", metavar="FILE", help="also write the metrics as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from adaptseg.checkpoint_eval import run

    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
