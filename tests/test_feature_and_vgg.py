"""The paper's other rows: feature-level adaptation and the DeepLab-v2 VGG-16 backbone."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import tiny_config, tiny_data
from study_helpers import run_study, tiny_spec, write_spec
from torchvision.models import vgg16

from adaptseg.config import ConfigError, build_config
from adaptseg.data.synthetic import generate
from adaptseg.losses import SOURCE_LABEL, adv_loss
from adaptseg.models import DeeplabVGG, load_init_weights
from adaptseg.models.discriminator import FCDiscriminator, enlarge_to_min_size
from adaptseg.trainer import Trainer

# The official model/deeplab_vgg.py built for 19 classes: 14,714,688 in the 13 VGG-16 convs,
# 4,719,616 in fc6, 9,438,208 in fc7 and 4 x 175,123 in the ASPP classifier.
VGG_PARAMETERS = 29_573_004


def make_trainer(**overrides) -> Trainer:
    source, target, evals = tiny_data()
    return Trainer(tiny_config(**overrides), source, target, evals)


def test_vgg16_matches_the_official_parameter_count_and_output_stride_8():
    model = DeeplabVGG(19)
    assert sum(p.numel() for p in model.parameters()) == VGG_PARAMETERS
    model.eval()
    with torch.inference_mode():
        for size, expected in (((512, 1024), (64, 128)), ((720, 1280), (90, 160))):
            aux, logits = model(torch.zeros(1, 3, *size))
            assert aux is None and tuple(logits.shape) == (1, 19, *expected)


def test_vgg16_init_from_torchvision_moves_conv5_where_pool4_was(tmp_path):
    reference = vgg16(weights=None).state_dict()
    torch.save(reference, tmp_path / "vgg16.pth")
    model = DeeplabVGG(19)
    assert load_init_weights(model, tmp_path / "vgg16.pth") == (26, 26)
    own = model.state_dict()
    assert torch.equal(own["features.23.weight"], reference["features.24.weight"])  # conv5_1
    assert torch.equal(own["features.21.weight"], reference["features.21.weight"])  # conv4_3
    assert own["features.29.weight"].shape == (1024, 512, 3, 3)  # fc6 stays random


def test_vgg16_is_single_level():
    with pytest.raises(ConfigError, match="multi_level"):
        build_config({"backbone": "vgg16", "source": "random", "target": "random"}, "test")


def test_a_vgg16_training_step_on_cpu():
    out = make_trainer(backbone="vgg16", multi_level=False).step()
    assert {"loss_seg_src_main", "loss_adv_trg_main", "loss_d_main"} <= set(out)
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())


def test_feature_discriminators_see_the_feature_channels():
    trainer = make_trainer(adapt_space="feature")
    # small preset: conv4 has 64 channels, conv5 128 (ResNet-101: 1024 and 2048)
    assert trainer.discriminators["aux"].conv1.in_channels == 64
    assert trainer.discriminators["main"].conv1.in_channels == 128
    out = trainer.step()
    assert {"loss_adv_trg_main", "loss_adv_trg_aux", "loss_d_main", "loss_d_aux"} <= set(out)
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())


@pytest.mark.parametrize("space", ["output", "feature"])
def test_the_adversarial_loss_reaches_g_and_in_feature_space_skips_the_head(space):
    trainer = make_trainer(adapt_space=space, multi_level=False)
    images = torch.stack([trainer.target_stream.dataset[0]])
    prediction = trainer._segment(images, tuple(images.shape[-2:]))
    loss = adv_loss(
        trainer._discriminate("main", prediction, detach=False), SOURCE_LABEL, "vanilla"
    )
    loss.backward()
    backbone = trainer.model.layer4[0].conv1.weight.grad
    head = trainer.model.layer6.conv2d_list[0].weight.grad
    assert backbone is not None and backbone.abs().sum() > 0
    if space == "feature":
        assert head is None  # D reads conv5: the classifier is not on the path
    else:
        assert head is not None and head.abs().sum() > 0


def test_maps_under_32_pixels_are_enlarged_for_d_instead_of_crashing():
    small = torch.randn(2, 128, 8, 16)  # conv5 of a 64x128 input at output stride 8
    enlarged = enlarge_to_min_size(small, align_corners=True)
    assert tuple(enlarged.shape) == (2, 128, 32, 64)
    assert tuple(FCDiscriminator(128, 8)(enlarged).shape) == (2, 1, 1, 2)
    large = torch.randn(1, 19, 65, 129)
    assert enlarge_to_min_size(large, align_corners=True) is large


@pytest.mark.slow
def test_a_feature_level_arm_runs_end_to_end_beside_output_space(tmp_path):
    generate(tmp_path / "bench", seed=0, size=(64, 128), counts=(16, 16, 12))
    spec = tiny_spec(
        tmp_path / "bench",
        arms={"single_level": {"multi_level": False},
              "feature_level": {"multi_level": False, "adapt_space": "feature"}},
        search={"num_samples": 1, "space": {"lambda_adv_main": {"log_uniform": [1e-3, 1e-2]}}},
        scheduler={"kind": "none"},
        confirm={"top_k": 1, "seeds": [0]},
    )  # fmt: skip
    result = run_study(write_spec(tmp_path, spec), tmp_path / "results")
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "results" / "tiny"
    trials = pd.read_parquet(root / "tables" / "trials.parquet")
    feature = trials[trials["arm"] == "feature_level"]
    assert sorted(feature["stage"]) == ["confirm", "search"]
    assert (feature["status"] == "completed").all()
    assert feature["report_miou_best_on_select"].notna().sum() == 1
    html = (root / "report.html").read_text()
    assert "feature_level" in html and "single_level" in html
