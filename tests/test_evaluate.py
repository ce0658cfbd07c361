"""``python -m adaptseg.evaluate``: the official protocol on official-format checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config, tiny_data
from PIL import Image

from adaptseg.data.files import CITYSCAPES_TABLE
from adaptseg.data.labels import PALETTE
from adaptseg.data.synthetic import generate
from adaptseg.evaluate import main
from adaptseg.models import DeeplabMulti, DeeplabVGG
from adaptseg.trainer import Trainer


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    generate(root, seed=3, size=(64, 128), counts=(1, 1, 4))
    return root / "cityscapes"


def recomputed_miou(predictions: Path, cityscapes: Path) -> float:
    """compute_iou.py's way: GT label ids -> train ids, one confusion matrix, nanmean."""
    confusion = np.zeros((19, 19), dtype=np.int64)
    for gt_file in sorted((cityscapes / "gtFine" / "val").glob("*/*_gtFine_labelIds.png")):
        stem = gt_file.name.removesuffix("_gtFine_labelIds.png")
        gt = CITYSCAPES_TABLE[np.asarray(Image.open(gt_file))].astype(np.int64)
        pred = np.asarray(Image.open(predictions / f"{stem}_leftImg8bit.png")).astype(np.int64)
        assert pred.shape == gt.shape
        valid = gt < 19
        confusion += np.bincount(gt[valid] * 19 + pred[valid], minlength=361).reshape(19, 19)
    diagonal = np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = diagonal / (confusion.sum(0) + confusion.sum(1) - diagonal)
    return float(np.nanmean(iou))


def test_an_official_multi_level_resnet101_checkpoint_evaluates_as_compute_iou_would(
    tmp_path, cityscapes, capsys
):
    torch.manual_seed(0)
    model = DeeplabMulti(19, "resnet101", multi_level=True)
    state = model.state_dict()
    assert {"layer5.conv2d_list.0.weight", "layer6.conv2d_list.3.bias"} <= set(state)
    torch.save(state, tmp_path / "GTA2Cityscapes_multi-test.pth")
    out = tmp_path / "predictions"
    code = main([
        "--checkpoint", str(tmp_path / "GTA2Cityscapes_multi-test.pth"), "--data", str(cityscapes),
        "--size", "64x128", "--device", "cpu", "--save-predictions", str(out),
        "--json", str(tmp_path / "metrics.json"),
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (
        "resnet101, multi-level, 2 ASPP branches, caffe preprocessing, 64x128; 4 images of val "
        "(all)" in captured.err
    )
    table = captured.out.strip().splitlines()
    assert len(table) == 20 and table[0].startswith("road") and table[-1].startswith("mIoU")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(recomputed_miou(out, cityscapes), abs=1e-12)
    assert float(table[-1].split()[-1]) == pytest.approx(100 * metrics["miou"], abs=0.006)
    colour = np.asarray(Image.open(next(out.glob("*_color.png"))))
    assert colour.shape[-1] == 3 and {tuple(c) for c in colour.reshape(-1, 3)} <= set(PALETTE)


def test_a_vgg_checkpoint_with_a_module_prefix_is_recognised(tmp_path, cityscapes, capsys):
    state = {f"module.{k}": v for k, v in DeeplabVGG(19).state_dict().items()}
    torch.save(state, tmp_path / "vgg.pth")
    code = main(["--checkpoint", str(tmp_path / "vgg.pth"), "--data", str(cityscapes),
                 "--size", "64x128", "--device", "cpu", "--limit", "1", "--classes", "13"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "vgg16, single-level" in captured.err
    assert len(captured.out.strip().splitlines()) == 14  # SYNTHIA's 13 classes + mIoU


def test_a_checkpoint_that_does_not_fit_fails_with_one_line(tmp_path, cityscapes, capsys):
    state = DeeplabMulti(19, "resnet101", multi_level=False).state_dict()
    del state["layer4.2.conv3.weight"]
    torch.save(state, tmp_path / "broken.pth")
    code = main(["--checkpoint", str(tmp_path / "broken.pth"), "--data", str(cityscapes),
                 "--size", "64x128", "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "broken.pth" in err and "layer4.2.conv3.weight" in err


def test_an_adaptseg_checkpoint_builds_g_from_its_config(tmp_path, cityscapes, capsys):
    trainer = Trainer(tiny_config(backbone="small", aspp_branches=4), *tiny_data())
    torch.save(trainer.state_dict(), tmp_path / "step.pt")
    code = main(["--checkpoint", str(tmp_path / "step.pt"), "--data", str(cityscapes),
                 "--size", "64x128", "--device", "cpu"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "small, multi-level, 4 ASPP branches" in captured.err


def test_a_study_checkpoint_evaluates_its_best_on_select_weights(tmp_path, cityscapes, capsys):
    trainer = Trainer(tiny_config(backbone="small"), *tiny_data())
    state = trainer.state_dict()
    best = {k: torch.zeros_like(v) for k, v in state["model"].items()}  # predicts class 0
    state["best"] = {"miou": 0.5, "step": 4, "model": best}
    torch.save(state, tmp_path / "trainer.pt")
    args = ["--checkpoint", str(tmp_path / "trainer.pt"), "--data", str(cityscapes),
            "--size", "64x128", "--device", "cpu", "--save-predictions", str(tmp_path / "p")]  # fmt: skip
    assert main([*args, "--weights", "best_on_select"]) == 0, capsys.readouterr().err
    predictions = [np.asarray(Image.open(p)) for p in (tmp_path / "p").glob("*_leftImg8bit.png")]
    assert predictions and all((p == 0).all() for p in predictions)
    torch.save(trainer.state_dict(), tmp_path / "plain.pt")
    capsys.readouterr()
    code = main([*args[:1], str(tmp_path / "plain.pt"), *args[2:], "--weights", "best_on_select"])
    assert code == 2 and "no best-on-select weights" in capsys.readouterr().err


def test_the_checkpoints_own_protocol_is_used_and_a_differing_flag_says_so(
    tmp_path, cityscapes, capsys
):
    cfg = tiny_config(backbone="small", aspp_branches=4, preprocess="torchvision",
                      input_size_target="64x128", target_root=str(cityscapes))  # fmt: skip
    torch.save(Trainer(cfg, *tiny_data()).state_dict(), tmp_path / "step.pt")
    assert main(["--checkpoint", str(tmp_path / "step.pt"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "small, multi-level, 4 ASPP branches, torchvision preprocessing, 64x128" in err
    assert "overrides" not in err
    assert main(["--checkpoint", str(tmp_path / "step.pt"), "--device", "cpu",
                 "--preprocess", "caffe", "--size", "32x64"]) == 0  # fmt: skip
    lines = capsys.readouterr().err.splitlines()
    assert "--size 32x64 overrides the checkpoint's input_size_target 64x128" in lines
    assert "--preprocess caffe overrides the checkpoint's preprocess torchvision" in lines


def test_a_bare_state_dict_without_data_asks_for_it(tmp_path, capsys):
    torch.save(DeeplabMulti(19, "small").state_dict(), tmp_path / "bare.pth")
    assert main(["--checkpoint", str(tmp_path / "bare.pth"), "--device", "cpu"]) == 2
    assert "--data: the checkpoint names no data root" in capsys.readouterr().err
