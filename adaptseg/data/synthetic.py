"""A synthetic domain-shift benchmark written in the GTA5 and Cityscapes layouts (and, with
``--synthia``, a SYNTHIA-RAND-CITYSCAPES-layout source beside them).

    python -m adaptseg.data.synthetic OUT [--seed S] [--size HxW] [--counts SRC,TRG,VAL]
                                      [--synthia]

Procedural street scenes with all 19 Cityscapes classes. The source domain ("GTA5") has flat
class colours and a fixed layout; the target domain ("Cityscapes") moves every class colour
towards other classes' colours, adds texture, noise, blur and a contrast change, and shifts the
layout (horizon height, object scale, more cars and people). The colour shift is what makes
the gap adaptable from the output space (docs/data.md): a source-only model paints spatially
implausible label maps on the target, which an output-space discriminator can see. Same seed,
same bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import png
from PIL import Image

from adaptseg.config import parse_size
from adaptseg.data.labels import PALETTE, SYNTHIA_ID_TO_TRAIN, TRAIN_TO_CITYSCAPES_ID
from adaptseg.data.scenes import Style, scene, source_style, target_style

GENERATOR_VERSION = 2
TRAIN_CITIES = ("aachen", "bochum", "bremen")
VAL_CITIES = ("frankfurt", "lindau", "munster")
DEFAULT_SIZE = (128, 256)
DEFAULT_COUNTS = (1000, 1000, 200)
SYNTHIA_ID_OF_TRAIN = np.zeros(19, dtype=np.uint16)
for _synthia_id, _train_id in SYNTHIA_ID_TO_TRAIN.items():
    SYNTHIA_ID_OF_TRAIN[_train_id] = _synthia_id


def _save_synthia_label(label: np.ndarray, path: Path) -> None:
    """SYNTHIA's GT/LABELS: 16-bit RGB PNGs, the class id in the first channel (the instance id
    in the second)."""
    height, width = label.shape
    planes = np.stack([SYNTHIA_ID_OF_TRAIN[label], np.zeros_like(label, np.uint16),
                       np.zeros_like(label, np.uint16)], axis=-1)  # fmt: skip
    writer = png.Writer(width, height, bitdepth=16, greyscale=False)
    with open(path, "wb") as handle:
        writer.write(handle, planes.reshape(height, -1).tolist())


ID_OF_TRAIN = np.array([TRAIN_TO_CITYSCAPES_ID[t] for t in range(19)], dtype=np.uint8)


def _save_gta5_label(label: np.ndarray, path: Path) -> None:
    """GTA5 labels are palette PNGs whose indices are Cityscapes label ids."""
    image = Image.fromarray(ID_OF_TRAIN[label], mode="P")
    palette = [0] * 768
    for train_id, cityscapes_id in enumerate(ID_OF_TRAIN):
        palette[3 * cityscapes_id : 3 * cityscapes_id + 3] = PALETTE[train_id]
    image.putpalette(palette)
    image.save(path, compress_level=1)


def _save(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, compress_level=1)


def _meta(
    seed: int, size: tuple[int, int], counts: tuple[int, int, int], synthia: bool = False
) -> dict:
    meta = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "size": f"{size[0]}x{size[1]}",
        "counts": {"source": counts[0], "target_train": counts[1], "target_val": counts[2]},
    }
    if synthia:
        meta["layouts"] = ["gta5", "synthia", "cityscapes"]
    return meta


def generate(
    out: Path,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    counts: tuple[int, int, int] = DEFAULT_COUNTS,
    progress: bool = False,
    synthia: bool = False,
) -> None:
    """Write ``out/gta5`` (source) and ``out/cityscapes`` (target train + val); ``synthia``:
    also ``out/synthia``, a source in the SYNTHIA-RAND-CITYSCAPES layout (``RGB/``,
    ``GT/LABELS/`` with 16-bit labels) drawn with only the classes SYNTHIA has."""
    source, target = source_style(), target_style()
    jobs: list[tuple[str, Style, int]] = [
        ("source", source, counts[0]),
        ("train", target, counts[1]),
        ("val", target, counts[2]),
    ]
    if synthia:
        jobs.append(("synthia", source, counts[0]))
        (out / "synthia" / "RGB").mkdir(parents=True, exist_ok=True)
        (out / "synthia" / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
    (out / "gta5" / "images").mkdir(parents=True, exist_ok=True)
    (out / "gta5" / "labels").mkdir(parents=True, exist_ok=True)
    total, done, start = sum(count for *_, count in jobs), 0, time.perf_counter()
    for part_index, (part, style, count) in enumerate(jobs):
        for index in range(count):
            rng = np.random.default_rng([seed, part_index, index])
            image, label = scene(size, style, rng, lacking=part == "synthia")
            if part == "source":
                name = f"{index + 1:05d}.png"
                _save(image, out / "gta5" / "images" / name)
                _save_gta5_label(label, out / "gta5" / "labels" / name)
            elif part == "synthia":
                name = f"{index:07d}.png"
                _save(image, out / "synthia" / "RGB" / name)
                _save_synthia_label(label, out / "synthia" / "GT" / "LABELS" / name)
            else:
                cities = TRAIN_CITIES if part == "train" else VAL_CITIES
                city = cities[index % len(cities)]
                stem = f"{city}_{index // len(cities):06d}_000019"
                image_dir = out / "cityscapes" / "leftImg8bit" / part / city
                label_dir = out / "cityscapes" / "gtFine" / part / city
                image_dir.mkdir(parents=True, exist_ok=True)
                label_dir.mkdir(parents=True, exist_ok=True)
                _save(image, image_dir / f"{stem}_leftImg8bit.png")
                _save(ID_OF_TRAIN[label], label_dir / f"{stem}_gtFine_labelIds.png")
            done += 1
            if progress and (done % 200 == 0 or done == total):
                rate = done / (time.perf_counter() - start)
                what = {"source": "source (GTA5 layout)", "synthia": "source (SYNTHIA layout)"}
                what = what.get(part, f"target {part}")
                print(
                    f"\rsynthetic benchmark -> {out}: {done}/{total} images ({what}, "
                    f"{rate:.0f}/s)  ",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
    if progress:
        print(file=sys.stderr)
    meta = _meta(seed, size, counts, synthia)
    (out / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n")


def ensure_benchmark(
    out: Path, seed: int = 0, size=DEFAULT_SIZE, counts=DEFAULT_COUNTS, synthia: bool = False
) -> Path:
    """Generate the benchmark into ``out`` unless a complete one with these settings is there."""
    meta_path = out / "synthetic.json"
    wanted = _meta(seed, size, counts, synthia)
    if meta_path.exists() and json.loads(meta_path.read_text()) == wanted:
        return out
    generate(out, seed, size, counts, progress=True, synthia=synthia)
    return out


def _counts(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected three positive integers SRC,TRG,VAL, got {text!r}"
        )
    return int(parts[0]), int(parts[1]), int(parts[2])


def _size(text: str) -> tuple[int, int]:
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size[0] < 32 or size[1] < 32:
        raise argparse.ArgumentTypeError(f"expected at least 32x32, got {text!r}")
    return size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adaptseg.data.synthetic",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", type=Path, help="folder that receives gta5/ and cityscapes/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--synthia",
        action="store_true",
        help="also write a source in the SYNTHIA-RAND-CITYSCAPES layout into OUT/synthia",
    )
    parser.add_argument("--size", type=_size, default=DEFAULT_SIZE, help="HxW (default 128x256)")
    parser.add_argument(
        "--counts",
        type=_counts,
        default=DEFAULT_COUNTS,
        help="source, target-train and target-val images (default 1000,1000,200)",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    generate(args.out, args.seed, args.size, args.counts, progress=True, synthia=args.synthia)
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
