"""The AdaptSegNet iteration on CPU: gradient flow, schedule, controls, resume, divergence."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config, tiny_data
from torch.utils.data import Dataset

from adaptseg.checkpoint import atomic_torch_save
from adaptseg.config import build_config
from adaptseg.optim import set_poly_lr
from adaptseg.trainer import NonFiniteLossError, Trainer

ALL_LOSSES = {
    "loss_seg_src_main", "loss_seg_src_aux", "loss_adv_trg_main", "loss_adv_trg_aux",
    "loss_d_main", "loss_d_aux",
}  # fmt: skip


def make_trainer(**overrides) -> Trainer:
    source, target, evals = tiny_data()
    return Trainer(tiny_config(**overrides), source, target, evals)


def grads(module) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in module.parameters()]


def test_step_reports_every_loss_and_lr():
    out = make_trainer().step()
    assert ALL_LOSSES <= set(out) and {"lr", "lr_d"} <= set(out)
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())


def d_grads(trainer) -> list[torch.Tensor | None]:
    return [g for d in trainer.discriminators.values() for g in grads(d)]


def test_the_adversarial_loss_trains_g_and_never_d():
    usual, strong = make_trainer(), make_trainer(lambda_adv_main=0.5, lambda_adv_aux=0.5)
    usual.step(), strong.step()
    assert any(not torch.equal(a, b) for a, b in zip(grads(usual.model), grads(strong.model))
               if a is not None), "the adversarial weight did not change G's gradient"  # fmt: skip
    for a, b in zip(d_grads(usual), d_grads(strong), strict=True):
        assert torch.equal(a, b), "D got gradient from the adversarial loss"


def test_the_discriminator_losses_train_d_and_never_g(monkeypatch):
    full, without = make_trainer(), make_trainer()
    monkeypatch.setattr(without, "_train_discriminators", lambda source, target: {})
    full.step(), without.step()
    for a, b in zip(grads(full.model), grads(without.model), strict=True):
        assert (a is None and b is None) or torch.equal(a, b), "G got gradient from a D loss"
    assert all(g is not None and g.abs().sum() > 0 for g in d_grads(full))
    assert all(g is None for g in d_grads(without)), "D got gradient from G's losses"
    assert all(p.requires_grad for d in full.discriminators.values() for p in d.parameters())


@pytest.mark.parametrize("step", [0, 150000, 249999])
def test_poly_lr_for_both_groups_and_discriminators(step):
    trainer = make_trainer(num_steps=150000, eval_every=5000, lr=2.5e-4, optimizer="sgd")
    optimizers_d = [trainer.optimizers_d["main"], trainer.optimizers_d["aux"]]
    set_poly_lr(trainer.cfg, step, trainer.optimizer_g, optimizers_d)
    factor = (1 - step / 250000) ** 0.9
    groups = trainer.optimizer_g.param_groups
    assert groups[0]["lr"] == pytest.approx(2.5e-4 * factor, rel=1e-12)
    assert groups[1]["lr"] == pytest.approx(2.5e-3 * factor, rel=1e-12)
    assert all(o.param_groups[0]["lr"] == pytest.approx(1e-4 * factor) for o in optimizers_d)
    if step == 150000:
        assert groups[0]["lr"] == pytest.approx(1.10e-4, rel=1e-2)  # the LR never anneals to 0


def test_zero_adversarial_weights_update_g_exactly_like_source_only():
    control = make_trainer(lambda_adv_main=0.0, lambda_adv_aux=0.0)
    source_only = make_trainer(use_target=False)
    for _ in range(3):
        control.step()
        source_only.step()
    for (name, a), b in zip(control.model.named_parameters(), source_only.model.parameters()):
        assert torch.equal(a, b), name
    bn_a = control.model.bn1.running_mean
    bn_b = source_only.model.bn1.running_mean
    assert not torch.equal(bn_a, bn_b), "target images should move BatchNorm statistics"


def test_source_only_never_trains_discriminators():
    trainer = make_trainer(use_target=False)
    before = [p.clone() for p in trainer.discriminators["main"].parameters()]
    out = trainer.step()
    assert set(out) - {"lr", "lr_d"} == {"loss_seg_src_main", "loss_seg_src_aux"}
    after = trainer.discriminators["main"].parameters()
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_single_level_skips_aux_head_and_discriminator():
    trainer = make_trainer(multi_level=False)
    assert list(trainer.discriminators) == ["main"] and trainer.model.layer5 is None
    out = trainer.step()
    assert not any(k.endswith("_aux") for k in out)


@pytest.mark.parametrize(
    "overrides",
    [{"gan": "ls"}, {"optimizer": "sgd"}, {"amp": "bf16", "channels_last": True}],
    ids=["ls-gan", "sgd", "bf16-channels_last"],
)  # fmt: skip
def test_variants_train(overrides):
    trainer = make_trainer(**overrides)
    for _ in range(2):
        out = trainer.step()
    assert trainer.step_count == 2 and ALL_LOSSES <= set(out)


def test_resume_is_exact(tmp_path):
    def fresh():
        source, target, evals = tiny_data(length=5)
        return Trainer(tiny_config(batch_size=2), source, target, evals)

    straight = fresh()
    expected = [straight.step() for _ in range(6)]
    first = fresh()
    for _ in range(3):
        first.step()
    atomic_torch_save(first.state_dict(), tmp_path / "ckpt.pt")
    second = fresh()
    second.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    resumed = [second.step() for _ in range(3)]
    assert resumed == expected[3:]
    for (name, a), b in zip(
        second.model.state_dict().items(), straight.model.state_dict().values()
    ):
        assert torch.equal(a, b), name
    for level in ("aux", "main"):
        for a, b in zip(second.discriminators[level].parameters(),
                        straight.discriminators[level].parameters()):  # fmt: skip
            assert torch.equal(a, b)
    assert second.step_count == 6


class NaNSource(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        return torch.full((3, 64, 64), float("nan")), torch.zeros(64, 64, dtype=torch.long)


def test_non_finite_loss_names_step_and_losses_and_steps_nothing():
    _, target, evals = tiny_data()
    trainer = Trainer(tiny_config(), NaNSource(), target, evals)
    before = [p.clone() for p in trainer.model.parameters()]
    with pytest.raises(NonFiniteLossError, match=r"at step 0: loss_seg_src_main=nan"):
        trainer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_huge_learning_rate_diverges_with_an_error():
    trainer = make_trainer(optimizer="sgd", lr=1e8, momentum=0.0)
    with pytest.raises(NonFiniteLossError, match="loss became NaN or infinite at step"):
        for _ in range(30):
            trainer.step()


def test_evaluate_upsamples_to_the_label_size():
    source, target, _ = tiny_data()
    from adaptseg.data import RandomSegDataset

    big_labels = RandomSegDataset(2, (128, 128), seed=3)

    class HalfSizeImages(Dataset):
        def __len__(self):
            return len(big_labels)

        def __getitem__(self, index):
            image, label = big_labels[index]
            return image[:, ::2, ::2].contiguous(), label

    trainer = Trainer(tiny_config(), source, target, {"select": HalfSizeImages()})
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["miou"] <= 1.0 and len(metrics) == 20
    assert trainer.model.training


def test_target_required_when_use_target():
    source, _, evals = tiny_data()
    with pytest.raises(ValueError, match="use_target is true but no target dataset"):
        Trainer(build_config({"source": "random", "target": "random"}), source, None, evals)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_foreach_and_fused_optimisers_make_the_same_update(optimizer, impl):
    reference = make_trainer(optimizer=optimizer)
    other = make_trainer(optimizer=optimizer, optimizer_impl=impl)
    assert other.optimizer_g.defaults[impl] is True
    assert other.optimizers_d["main"].defaults[impl] is True
    for _ in range(2):
        reference.step(), other.step()
    modules = [(reference.model, other.model)] + [
        (reference.discriminators[level], other.discriminators[level]) for level in ("aux", "main")
    ]
    for ours, theirs in modules:
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_cudnn_benchmark_is_switched_on_only_when_asked_and_not_deterministic(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: None)
    make_trainer(cudnn_benchmark=True, deterministic=True)
    assert torch.backends.cudnn.benchmark is False
    make_trainer(cudnn_benchmark=True)
    assert torch.backends.cudnn.benchmark is True


def test_the_ls_gan_loss_is_the_mean_squared_distance_to_the_label():
    from adaptseg.losses import adv_loss

    logits = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]]]])
    assert adv_loss(logits, 1.0, "ls").item() == pytest.approx((0.25 + 4.0 + 1.0 + 1.0) / 4)
    assert adv_loss(logits, 0.0, "ls").item() == pytest.approx((0.25 + 1.0 + 4.0 + 0.0) / 4)
    softplus = torch.nn.functional.softplus
    expected = (softplus(-logits).mean()).item()  # BCE with logits against 1
    assert adv_loss(logits, 1.0, "vanilla").item() == pytest.approx(expected)


class Unignored(Dataset):
    """A dataset whose labels have no ignored pixel (so per-image and per-batch means agree)."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        item = self.base[index]
        if isinstance(item, tuple):
            image, label = item
            return image, torch.where(label == 255, 0, label)
        return item


def test_iter_size_2_makes_the_same_update_as_batch_2_with_frozen_batch_norm():
    def trainer(**overrides):
        source, target, evals = tiny_data()
        cfg = tiny_config(bn_mode="frozen", device="cpu", **overrides)
        return Trainer(cfg, Unignored(source), target, evals)

    accumulated, batched = trainer(iter_size=2), trainer(batch_size=2)
    a, b = accumulated.step(), batched.step()
    for key in ALL_LOSSES:
        assert a[key] == pytest.approx(b[key], rel=1e-5), key
    for x, y in zip(accumulated.model.parameters(), batched.model.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_frozen_batch_norm_never_moves_its_running_statistics():
    trainer = make_trainer(bn_mode="frozen")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if "running" in k}
    for _ in range(2):
        trainer.step()
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert int(after["bn1.num_batches_tracked"]) == 0
    moving = make_trainer()
    moving.step()
    assert not torch.equal(moving.model.bn1.running_mean, before["bn1.running_mean"])
