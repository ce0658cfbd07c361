"""The synthetic benchmark: official layouts, every class in every split, same seed same bytes."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from adaptseg.data.files import SegmentationFiles, cityscapes_samples, gta5_samples
from adaptseg.data.synthetic import ensure_benchmark, generate, main


def digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate(tmp_path / name, seed=seed, size=(64, 128), counts=(4, 4, 3))
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_layouts_load_with_the_real_loaders_and_every_class_appears(tmp_path):
    root = tmp_path / "bench"
    assert main([str(root), "--size", "96x192", "--counts", "40,40,40", "--seed", "1"]) == 0
    assert (root / "gta5" / "images" / "00001.png").is_file()
    source = SegmentationFiles(gta5_samples(root / "gta5"), (96, 192))
    target_train = SegmentationFiles(
        cityscapes_samples(root / "cityscapes", "train", True), (96, 192)
    )
    target_val = SegmentationFiles(cityscapes_samples(root / "cityscapes", "val", True), (96, 192))
    for dataset in (source, target_train, target_val):
        assert len(dataset) == 40
        seen = set()
        for index in range(len(dataset)):
            seen |= set(np.unique(dataset[index][1].numpy()).tolist())
        assert set(range(19)) <= seen, sorted(set(range(19)) - seen)
    label = np.array(Image.open(next((root / "gta5" / "labels").iterdir())))
    assert Image.open(next((root / "gta5" / "labels").iterdir())).mode == "P"
    assert set(np.unique(label)) <= {
        7,
        8,
        11,
        12,
        13,
        17,
        19,
        20,
        21,
        22,
        23,
        24,
        25,
        26,
        27,
        28,
        31,
        32,
        33,
    }


def test_source_and_target_look_different_for_the_same_class(tmp_path):
    generate(tmp_path, seed=0, size=(64, 128), counts=(10, 10, 1))

    def mean_colour(images, labels, cls):
        pixels = [
            np.asarray(Image.open(image))[np.asarray(Image.open(label)) == cls]
            for image, label in zip(images, labels)
        ]
        return np.concatenate(pixels).mean(0)

    src_i = sorted((tmp_path / "gta5" / "images").iterdir())
    src_l = sorted((tmp_path / "gta5" / "labels").iterdir())
    trg_i = sorted((tmp_path / "cityscapes" / "leftImg8bit" / "train").rglob("*.png"))
    trg_l = sorted((tmp_path / "cityscapes" / "gtFine" / "train").rglob("*.png"))
    road_src = mean_colour(src_i, src_l, 7)
    road_trg = mean_colour(trg_i, trg_l, 7)
    assert np.abs(road_src - road_trg).max() > 15


def test_ensure_benchmark_reuses_a_complete_one(tmp_path):
    ensure_benchmark(tmp_path, seed=0, size=(64, 128), counts=(2, 2, 2))
    marker = tmp_path / "gta5" / "images" / "00001.png"
    stamp = marker.stat().st_mtime_ns
    ensure_benchmark(tmp_path, seed=0, size=(64, 128), counts=(2, 2, 2))
    assert marker.stat().st_mtime_ns == stamp
