"""DeeplabMulti and FCDiscriminator match the official networks in size, shape and layout."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from adaptseg.models import DeeplabMulti, FCDiscriminator, InitWeightsError, load_init_weights


def count(module: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def meta_forward(module: nn.Module, shape: tuple[int, ...]):
    with torch.no_grad():
        return module(torch.zeros(*shape, device="meta"))


def test_resnet101_multi_has_the_official_parameter_counts():
    with torch.device("meta"):
        model = DeeplabMulti(19, "resnet101", multi_level=True)
    assert count(model) == 44_601_560
    assert count(model, trainable=True) == 44_496_216


@pytest.mark.parametrize(("size", "logits"), [((512, 1024), (65, 129)), ((720, 1280), (91, 161))])
def test_resnet101_output_sizes_match_the_official_outS(size, logits):
    with torch.device("meta"):
        model = DeeplabMulti(19, "resnet101", multi_level=True)
    aux, main = meta_forward(model, (1, 3, *size))
    assert tuple(main.shape) == (1, 19, *logits)
    assert tuple(aux.shape) == (1, 19, *logits)


@pytest.mark.parametrize(("size", "out"), [((512, 1024), (16, 32)), ((720, 1280), (22, 40))])
def test_discriminator_size_and_output(size, out):
    with torch.device("meta"):
        d = FCDiscriminator(19)
    assert count(d) == 2_781_121
    assert tuple(meta_forward(d, (1, 19, *size)).shape) == (1, 1, *out)


def test_caffe_layout_stride_on_first_conv_ceil_pool_and_dilations():
    with torch.device("meta"):
        model = DeeplabMulti(19, "resnet101")
    assert model.maxpool.ceil_mode
    first = model.layer2[0]
    assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)
    assert all(block.conv2.dilation == (2, 2) for block in model.layer3)
    assert all(block.conv2.dilation == (4, 4) for block in model.layer4)
    assert model.layer3[0].downsample is not None and model.layer4[0].downsample is not None
    assert all(
        not p.requires_grad for m in model.modules() if isinstance(m, nn.BatchNorm2d)
        for p in m.parameters()
    )  # fmt: skip


def test_single_level_builds_and_returns_no_aux_head():
    model = DeeplabMulti(19, "small", multi_level=False)
    assert model.layer5 is None
    aux, main = model(torch.zeros(1, 3, 64, 64))
    assert aux is None and main.shape == (1, 19, 9, 9)


def test_two_aspp_branches_leave_the_last_two_without_gradient():
    torch.manual_seed(0)
    model = DeeplabMulti(5, "small", aspp_branches=2)
    _, main = model(torch.randn(1, 3, 64, 64))
    main.sum().backward()
    grads = [conv.weight.grad for conv in model.layer6.conv2d_list]
    assert grads[0] is not None and grads[1] is not None
    assert grads[2] is None and grads[3] is None
    four = DeeplabMulti(5, "small", aspp_branches=4)
    four.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    assert not torch.allclose(four(x)[1], model(x)[1])


def test_frozen_bn_mode_keeps_batchnorm_in_eval_mode():
    model = DeeplabMulti(5, "small", bn_mode="frozen").train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    before = bns[0].running_mean.clone()
    model(torch.randn(2, 3, 64, 64) * 5 + 3)
    assert torch.equal(before, bns[0].running_mean)
    official = DeeplabMulti(5, "small").train()
    official(torch.randn(2, 3, 64, 64) * 5 + 3)
    bn = next(m for m in official.modules() if isinstance(m, nn.BatchNorm2d))
    assert not torch.equal(before, bn.running_mean)


def test_deeplab_init_file_fills_backbone_and_skips_its_classifier(tmp_path):
    reference = DeeplabMulti(19, "resnet50")
    state = {f"Scale.{k}": v for k, v in reference.state_dict().items() if "layer5" not in k}
    state = {k: v for k, v in state.items() if "layer6" not in k}
    state["Scale.layer5.conv2d_list.0.weight"] = torch.zeros(21, 2048, 3, 3)  # the COCO head
    path = tmp_path / "DeepLab_resnet_pretrained_init.pth"
    torch.save(state, path)
    model = DeeplabMulti(19, "resnet50")
    matched, total = load_init_weights(model, path)
    assert matched == total
    assert torch.equal(model.layer4[2].conv3.weight, reference.layer4[2].conv3.weight)
    assert torch.equal(model.bn1.running_var, reference.bn1.running_var)
    assert not torch.equal(
        model.layer5.conv2d_list[0].weight, reference.layer5.conv2d_list[0].weight
    )


def test_torchvision_state_dict_loads(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    model = DeeplabMulti(19, "resnet50")
    matched, total = load_init_weights(model, path)
    assert matched == total == 265  # 53 convs + 53 BNs x 4 tensors


def test_too_few_matching_tensors_is_a_clear_error(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(InitWeightsError, match=r"resnet18.pth: only \d+ of \d+ backbone tensors"):
        load_init_weights(DeeplabMulti(19, "resnet50"), path)


def test_truncated_init_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(InitWeightsError, match="broken.pth: not a readable PyTorch weights file"):
        load_init_weights(DeeplabMulti(19, "resnet50"), path)
