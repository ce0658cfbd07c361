"""Fidelity to the official code: the repeated backbone update of its SGD, and its D weights."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from conftest import tiny_config, tiny_data

from adaptseg.checkpoint import CheckpointError, atomic_torch_save, load_state
from adaptseg.config import build_config
from adaptseg.models import DeeplabMulti, DeeplabVGG, FCDiscriminator
from adaptseg.models.pretrained import InitWeightsError, load_discriminator_weights
from adaptseg.optim import backbone_visits
from adaptseg.trainer import Trainer


def official_list(model) -> list[torch.nn.Parameter]:
    """``get_1x_lr_params_NOscale`` as the official deeplab_multi.py writes it, re-typed here:
    for each root, every module of it (recursively), every parameter of that (recursively)."""
    out = []
    for root in (model.conv1, model.bn1, model.layer1, model.layer2, model.layer3, model.layer4):
        for module in root.modules():
            for parameter in module.parameters():
                if parameter.requires_grad:
                    out.append(parameter)
    return out


@pytest.mark.parametrize(
    ("backbone", "counts"),
    [("resnet101", {1: 1, 3: 99, 4: 4}), ("resnet50", {1: 1, 3: 48, 4: 4})],
)  # fmt: skip
def test_the_official_list_repeats_backbone_tensors_by_their_depth(backbone, counts):
    model = DeeplabMulti(19, backbone)
    visits = backbone_visits(model, "official")
    assert Counter(visits.values()) == counts
    assert sum(visits.values()) == len(official_list(model))  # 314 entries for ResNet-101
    assert visits[id(model.conv1.weight)] == 1
    assert visits[id(model.layer1[0].downsample[0].weight)] == 4
    assert visits[id(model.layer3[5].conv2.weight)] == 3
    assert set(backbone_visits(model, "once").values()) == {1}


def test_vgg16_lists_every_parameter_once_in_both_settings():
    model = DeeplabVGG(19)
    assert set(backbone_visits(model, "official").values()) == {1}


class LegacySGD:
    """The PyTorch 0.3/0.4 SGD loop over a parameter list, repeats included (issue 13)."""

    def __init__(self, groups: list[dict], momentum: float, weight_decay: float) -> None:
        self.param_groups = groups
        self.momentum, self.weight_decay = momentum, weight_decay
        self.state: dict = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                d_p.add_(p, alpha=self.weight_decay)  # in place: accumulates into p.grad
                state = self.state.setdefault(p, {})
                if "momentum_buffer" not in state:
                    buf = state["momentum_buffer"] = torch.zeros_like(p)
                    buf.mul_(self.momentum).add_(d_p)
                else:
                    buf = state["momentum_buffer"]
                    buf.mul_(self.momentum).add_(d_p)
                p.add_(buf, alpha=-group["lr"])


def sgd_trainer(**overrides) -> Trainer:
    source, target, evals = tiny_data()
    values = {"optimizer": "sgd", "lr": 1e-2, "device": "cpu", **overrides}
    return Trainer(tiny_config(**values), source, target, evals)


def test_three_official_iterations_match_the_legacy_loop_weight_for_weight():
    ours, reference = sgd_trainer(), sgd_trainer()
    model = reference.model
    reference.optimizer_g = LegacySGD(
        [{"params": official_list(model), "lr": 1e-2},
         {"params": list(model.head_parameters()), "lr": 1e-1}],
        momentum=0.9, weight_decay=5e-4,
    )  # fmt: skip
    for _ in range(3):
        ours.step(), reference.step()
    for (name, a), b in zip(ours.model.named_parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    theirs = reference.optimizer_g.state
    for p_ours, p_ref in zip(ours.model.parameters(), model.parameters(), strict=True):
        if p_ref in theirs:
            torch.testing.assert_close(
                ours.optimizer_g.state[p_ours]["momentum_buffer"],
                theirs[p_ref]["momentum_buffer"], rtol=0, atol=1e-6,
            )  # fmt: skip


def test_once_is_the_deduplicated_update_and_differs_from_official():
    official, once = sgd_trainer(), sgd_trainer(backbone_update="once")
    plain = sgd_trainer(backbone_update="once")
    model = plain.model
    plain.optimizer_g = torch.optim.SGD(
        [{"params": list(model.backbone_parameters()), "lr": 1e-2},
         {"params": list(model.head_parameters()), "lr": 1e-1}],
        lr=1e-2, momentum=0.9, weight_decay=5e-4,
    )  # fmt: skip
    for _ in range(2):
        official.step(), once.step(), plain.step()
    layer = [(a, b, c) for a, b, c in zip(official.model.layer2.parameters(),
             once.model.layer2.parameters(), plain.model.layer2.parameters()) if a.requires_grad]  # fmt: skip
    assert any(not torch.equal(a, b) for a, b, _ in layer), "official should differ from once"
    for _, b, c in layer:
        torch.testing.assert_close(b, c, rtol=0, atol=1e-7)


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_foreach_and_fused_kernels_make_the_same_official_update(impl):
    default, other = sgd_trainer(), sgd_trainer(optimizer_impl=impl)
    for _ in range(2):
        default.step(), other.step()
    for a, b in zip(default.model.parameters(), other.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_resume_with_the_official_update_is_exact(tmp_path):
    straight = sgd_trainer()
    for _ in range(4):
        straight.step()
    first = sgd_trainer()
    for _ in range(2):
        first.step()
    atomic_torch_save(first.state_dict(), tmp_path / "ckpt.pt")
    second = sgd_trainer()
    second.load_state_dict(load_state(tmp_path / "ckpt.pt"))
    for _ in range(2):
        second.step()
    for a, b in zip(second.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_with_adam_the_setting_changes_nothing():
    def adam(update: str) -> Trainer:
        return sgd_trainer(optimizer="adam", lr=1e-3, backbone_update=update)

    official, once = adam("official"), adam("once")
    for _ in range(2):
        official.step(), once.step()
    for a, b in zip(official.model.parameters(), once.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert build_config({"source": "random", "target": "random", "optimizer": "adam"})


# --- the discriminator's weights -------------------------------------------------------------
def official_layout(d: FCDiscriminator) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in d.state_dict().items()}


def former_layout(d: FCDiscriminator) -> dict[str, torch.Tensor]:
    names = {"conv1": "features.0", "conv2": "features.2", "conv3": "features.4",
             "conv4": "features.6"}  # fmt: skip
    out = {}
    for key, value in d.state_dict().items():
        layer, _, kind = key.partition(".")
        out[f"{names.get(layer, layer)}.{kind}"] = value.clone()
    return out


def test_d_keys_are_the_official_ones():
    assert list(FCDiscriminator(19, 8).state_dict()) == [
        f"{layer}.{kind}" for layer in ("conv1", "conv2", "conv3", "conv4", "classifier")
        for kind in ("weight", "bias")
    ]  # fmt: skip


@pytest.mark.parametrize("layout", [official_layout, former_layout], ids=["official", "former"])
def test_an_official_or_former_d_snapshot_continues_training_here(tmp_path, layout):
    torch.manual_seed(5)
    snapshot = FCDiscriminator(19, 8)
    torch.save(layout(snapshot), tmp_path / "GTA5_5000_D2.pth")
    trainer = sgd_trainer(init_discriminator_main=str(tmp_path / "GTA5_5000_D2.pth"))
    for a, b in zip(trainer.discriminators["main"].parameters(), snapshot.parameters()):
        assert torch.equal(a, b)
    trainer.step()


def test_weights_of_another_discriminator_are_refused_naming_the_file(tmp_path):
    torch.save(official_layout(FCDiscriminator(19, 16)), tmp_path / "wide.pth")
    with pytest.raises(InitWeightsError, match="wide.pth: not weights of this discriminator"):
        load_discriminator_weights(FCDiscriminator(19, 8), tmp_path / "wide.pth")


def test_a_checkpoint_of_another_format_is_refused_naming_it(tmp_path):
    trainer = sgd_trainer()
    trainer.step()
    old = {**trainer.state_dict(), "format": 1}
    atomic_torch_save(old, tmp_path / "old.pt")
    with pytest.raises(
        CheckpointError, match=r"old.pt: checkpoint format 1; this version reads format 2"
    ):
        load_state(tmp_path / "old.pt")
