"""Loaders in the official layouts (tiny trees made here), id maps, preprocessing, streams."""

from __future__ import annotations

import numpy as np
import png
import pytest
import torch
from PIL import Image

from adaptseg.config import build_config
from adaptseg.data.build import build_datasets
from adaptseg.data.files import (
    SYNTHIA_LABELS,
    SegmentationFiles,
    cityscapes_samples,
    gta5_samples,
    split_part,
    synthia_samples,
)
from adaptseg.data.labels import CITYSCAPES_ID_TO_TRAIN, SYNTHIA_ID_TO_TRAIN
from adaptseg.data.preprocess import CAFFE_MEAN_BGR, DataError
from adaptseg.data.stream import InfiniteStream

ALL_CITYSCAPES_IDS = np.arange(34, dtype=np.uint8).reshape(2, 17)


def rgb(path, height=8, width=16, colour=(10, 20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), colour, np.uint8)).save(path)


def make_gta5(root, n=3, label=ALL_CITYSCAPES_IDS):
    for i in range(n):
        rgb(root / "images" / f"{i:05d}.png", *label.shape, colour=(i * 40, 20, 30))
        (root / "labels").mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(label, mode="P")
        image.putpalette([v for c in range(256) for v in (c, c, c)])
        image.save(root / "labels" / f"{i:05d}.png")
    return root


def make_cityscapes(root, splits=("train", "val"), per_city=2, label=ALL_CITYSCAPES_IDS):
    for split in splits:
        for city in ("aachen", "bonn"):
            for i in range(per_city):
                stem = f"{city}_{i:06d}_000019"
                rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", 16, 32)
                label_dir = root / "gtFine" / split / city
                label_dir.mkdir(parents=True, exist_ok=True)
                Image.fromarray(label).save(label_dir / f"{stem}_gtFine_labelIds.png")
    return root


def make_synthia(root, ids):
    for name in ("0000000.png", "0000001.png"):
        rgb(root / "RGB" / name, *ids.shape)
        (root / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
        planes = np.stack([ids.astype(np.uint16), np.full_like(ids, 300, np.uint16), ids * 0], -1)
        writer = png.Writer(ids.shape[1], ids.shape[0], bitdepth=16, greyscale=False)
        with open(root / "GT" / "LABELS" / name, "wb") as handle:
            writer.write(handle, planes.reshape(ids.shape[0], -1).tolist())
    return root


def expected_train_ids(ids, mapping):
    return np.vectorize(lambda i: mapping.get(int(i), 255))(ids)


def test_gta5_maps_every_label_id(tmp_path):
    data = SegmentationFiles(gta5_samples(make_gta5(tmp_path / "gta5")), (2, 17))
    image, label = data[0]
    assert image.dtype == torch.float32 and image.shape == (3, 2, 17)
    assert label.dtype == torch.int64 and label.shape == (2, 17)
    assert (
        label.numpy().tolist()
        == expected_train_ids(ALL_CITYSCAPES_IDS, CITYSCAPES_ID_TO_TRAIN).tolist()
    )
    assert sorted(set(label.flatten().tolist())) == [*range(19), 255]


def test_cityscapes_train_without_labels_and_val_labels_at_their_own_size(tmp_path):
    root = make_cityscapes(
        tmp_path / "cs", label=np.kron(ALL_CITYSCAPES_IDS, np.ones((8, 2), np.uint8))
    )
    train = SegmentationFiles(cityscapes_samples(root, "train", False), (8, 16), with_labels=False)
    assert len(train) == 4 and train[0].shape == (3, 8, 16)
    val = SegmentationFiles(cityscapes_samples(root, "val", True), (8, 16), resize_labels=False)
    image, label = val[0]
    assert image.shape == (3, 8, 16) and label.shape == (16, 34)
    expected = expected_train_ids(
        np.kron(ALL_CITYSCAPES_IDS, np.ones((8, 2))), CITYSCAPES_ID_TO_TRAIN
    )
    assert label.numpy().tolist() == expected.tolist()


def test_synthia_16bit_labels_and_id_map(tmp_path):
    ids = np.arange(23, dtype=np.uint16).reshape(1, 23)
    data = SegmentationFiles(
        synthia_samples(make_synthia(tmp_path / "syn", ids)), (1, 23), SYNTHIA_LABELS
    )
    _, label = data[0]
    assert label.numpy().tolist() == expected_train_ids(ids, SYNTHIA_ID_TO_TRAIN).tolist()


def test_caffe_and_torchvision_preprocessing(tmp_path):
    root = make_gta5(tmp_path / "gta5", n=1)
    caffe = SegmentationFiles(gta5_samples(root), (2, 17), preprocess="caffe")[0][0]
    bgr = np.array([30, 20, 0], np.float32) - CAFFE_MEAN_BGR
    assert torch.allclose(caffe[:, 0, 0], torch.from_numpy(bgr))
    tv = SegmentationFiles(gta5_samples(root), (2, 17), preprocess="torchvision")[0][0]
    expected = (np.array([0, 20, 30]) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    assert torch.allclose(tv[:, 0, 0], torch.tensor(expected, dtype=torch.float32))


def test_list_file_selects_and_orders_images(tmp_path):
    root = make_gta5(tmp_path / "gta5", n=3)
    listing = tmp_path / "train.txt"
    listing.write_text("00002.png\n00000.png\n")
    assert [s.image.name for s in gta5_samples(root, listing)] == ["00002.png", "00000.png"]


def test_select_and_report_partition_the_evaluation_set(tmp_path):
    root = make_cityscapes(tmp_path / "cs", splits=("val",), per_city=20)
    samples = cityscapes_samples(root, "val", True)
    select, report = split_part(samples, "select"), split_part(samples, "report")
    assert {s.image for s in select} | {s.image for s in report} == {s.image for s in samples}
    assert not {s.image for s in select} & {s.image for s in report}
    assert 8 <= len(select) <= 32
    assert split_part(samples, "select") == select


def test_the_split_rule_is_the_parity_of_the_first_sha1_byte_and_survives_new_files():
    from pathlib import Path

    from adaptseg.data.files import Sample, in_select_part

    # First SHA-1 bytes of the names (computed once, by hand): 96, 221, 166.
    expected = {"frankfurt_000000_000294_leftImg8bit.png": True,
                "lindau_000001_000019_leftImg8bit.png": False,
                "munster_000000_000019_leftImg8bit.png": True}  # fmt: skip
    for name, select in expected.items():
        assert in_select_part(Path("/data/val/city") / name) is select
    names = [f"city_{i:06d}_000019_leftImg8bit.png" for i in range(40)]
    before = [Sample(Path(n), None) for n in names]
    after = before + [Sample(Path(f"new_{i:06d}_000019_leftImg8bit.png"), None) for i in range(9)]
    old = {s.image for s in split_part(before, "select")}
    assert old == {s.image for s in split_part(after, "select")} & set(Path(n) for n in names)
    assert split_part(before, "all") == before


def stream_batches(dataset, count, state=None, workers=0):
    stream = InfiniteStream(dataset, batch_size=2, seed=5, num_workers=workers)
    if state is not None:
        stream.load_state_dict(state)
    return [stream.__next__() for _ in range(count)], stream.state_dict()


def test_stream_resumes_at_its_position_with_augmentation(tmp_path):
    root = make_gta5(
        tmp_path / "gta5", n=5, label=np.kron(ALL_CITYSCAPES_IDS, np.ones((4, 2), np.uint8))
    )
    data = SegmentationFiles(gta5_samples(root), (8, 34), mirror=True, scale=True)
    straight, _ = stream_batches(data, 7)
    first, state = stream_batches(data, 4)
    assert state == {"epoch": 1, "consumed": 2}  # 5 images in batches of 2: 2 + 2 + 1, then 2
    rest, _ = stream_batches(data, 3, state, workers=2)
    for (a_img, a_lbl), (b_img, b_lbl) in zip(straight[4:], rest):
        assert torch.equal(a_img, b_img) and torch.equal(a_lbl, b_lbl)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(straight[:3], straight[3:6]))


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(DataError, match="nowhere: GTA5 root does not exist"):
        gta5_samples(tmp_path / "nowhere")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="images: no images found for GTA5"):
        gta5_samples(tmp_path / "empty")
    root = make_gta5(tmp_path / "gta5", n=2)
    (root / "labels" / "00001.png").unlink()
    with pytest.raises(DataError, match=r"00001.png: its label .*labels/00001.png does not exist"):
        gta5_samples(root)
    cs = tmp_path / "cs"
    (cs / "leftImg8bit").mkdir(parents=True)
    with pytest.raises(DataError, match="leftImg8bit/val: Cityscapes split folder does not exist"):
        cityscapes_samples(cs, "val", True)


def test_label_ids_outside_the_range_are_an_error(tmp_path):
    root = make_gta5(tmp_path / "gta5", n=1, label=np.array([[7, 40]], np.uint8))
    with pytest.raises(DataError, match=r"labels/00000.png: label id 40 is outside .* 0..33"):
        SegmentationFiles(gta5_samples(root), (1, 2))[0]


def test_corrupt_image_fails_at_build_and_in_workers_with_its_name(tmp_path):
    root = make_gta5(tmp_path / "gta5", n=3)
    (root / "images" / "00002.png").write_bytes(b"not a png")
    data = SegmentationFiles(gta5_samples(root), (2, 17))
    data.check()  # only the first sample is decoded at build time
    stream = InfiniteStream(data, batch_size=3, seed=0, num_workers=1)
    with pytest.raises(DataError) as info:
        next(stream)
    assert str(info.value).startswith(str(root / "images" / "00002.png") + ": unreadable image")
    (root / "images" / "00000.png").write_bytes(b"")
    with pytest.raises(DataError, match="00000.png: unreadable image"):
        data.check()


EXIT_WITH_LIVE_WORKERS = """
import sys
from adaptseg.data.stream import InfiniteStream
from adaptseg.data.files import SegmentationFiles, gta5_samples
from adaptseg.data.preprocess import DataError
kept = []  # what pytest.raises or a debugger does: the error's frames hold the iterator
ok = InfiniteStream(SegmentationFiles(gta5_samples(sys.argv[1]), (2, 17)), 1, 0, num_workers=1)
kept.append(next(ok))  # a stream left open, its worker idle
bad = InfiniteStream(SegmentationFiles(gta5_samples(sys.argv[2]), (2, 17)), 3, 0, num_workers=1)
try:
    next(bad)
except DataError as error:
    kept.append(error)
print("exiting")
"""


def test_a_process_with_loader_workers_left_open_or_failed_exits(tmp_path):
    # Workers ignore SIGTERM (so Ctrl-C and kill stop the trainer between steps); without the
    # stream's own shutdown, multiprocessing's exit handler waited for them for ever.
    import subprocess
    import sys

    good = make_gta5(tmp_path / "good", n=2)
    bad = make_gta5(tmp_path / "bad", n=3)
    (bad / "images" / "00002.png").write_bytes(b"not a png")
    result = subprocess.run(
        [sys.executable, "-c", EXIT_WITH_LIVE_WORKERS, str(good), str(bad)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "exiting", result.stderr[-2000:]


def test_build_datasets_from_a_config(tmp_path):
    gta = make_gta5(tmp_path / "gta5", n=2)
    cs = make_cityscapes(tmp_path / "cs", per_city=6)
    cfg = build_config({
        "source_root": str(gta), "target_root": str(cs), "input_size_source": "2x17",
        "input_size_target": "8x16", "num_steps": 10, "eval_every": 10,
    })  # fmt: skip
    data = build_datasets(cfg, eval_parts=["select", "report", "all"])
    assert len(data.source) == 2 and len(data.target) == 12
    assert len(data.eval_sets["select"]) + len(data.eval_sets["report"]) == 12
    oracle = build_config({**cfg.to_dict(), "source": "cityscapes", "source_root": str(cs)})
    assert len(build_datasets(oracle).source) == 12


def test_synthias_label_ids_map_to_the_standard_train_ids(tmp_path):
    """A hand-made 16-bit SYNTHIA label: ids in the first channel (RGB order), an instance id in
    the second that must not be read; the table as DAFormer's and TLL's converters write it."""
    ids = np.array([[3, 4, 2, 21, 5, 7, 15, 9, 6, 1, 10, 17, 8, 19, 12, 11, 0, 13, 14, 22]])
    expected = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18, 255, 255, 255, 255]]
    data = SegmentationFiles(
        synthia_samples(make_synthia(tmp_path / "syn", ids.astype(np.uint16))), (1, 20),
        SYNTHIA_LABELS,
    )  # fmt: skip
    assert data[0][1].numpy().tolist() == expected
