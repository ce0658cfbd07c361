"""ADVENT's AdvEnt and MinEnt (Vu et al., CVPR 2019) on the same trainer: the entropy map and
loss against the paper's equations, and one step of each against an iteration written here from
them (same weights, same batches, fp32 CPU)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import tiny_config, tiny_data
from study_helpers import ray_env, study_command
from test_study import bench  # noqa: F401  (the shared synthetic benchmark fixture)

from adaptseg.config import ConfigError, build_config
from adaptseg.losses import entropy_loss, entropy_map
from adaptseg.optim import set_poly_lr
from adaptseg.trainer import Trainer
from study.errors import SpecError
from study.spec.arms import arm_rows, comparison_rows, comparisons
from study.spec.loading import load_spec


def paper_map(prob: np.ndarray) -> np.ndarray:
    """Eq. 2 of the paper, per pixel and class: -p log p, normalised by log C (any base)."""
    classes = prob.shape[1]
    return -prob * np.log(prob + 1e-30) / np.log(classes)


@pytest.mark.parametrize("shape", [(1, 19, 4, 7), (2, 5, 3, 3), (3, 2, 1, 9)])
def test_entropy_map_and_loss_are_the_papers_equations(shape):
    generator = torch.Generator().manual_seed(sum(shape))
    logits = torch.randn(*shape, generator=generator, dtype=torch.float64) * 3
    prob = F.softmax(logits, dim=1)
    expected = paper_map(prob.numpy())
    assert entropy_map(prob).shape == prob.shape
    np.testing.assert_allclose(entropy_map(prob).numpy(), expected, atol=1e-6)
    n, _, h, w = shape
    assert abs(entropy_loss(prob).item() - expected.sum() / (n * h * w)) < 1e-6


def test_a_uniform_softmax_has_entropy_one_and_a_certain_one_zero():
    uniform = torch.full((2, 19, 3, 3), 1 / 19)
    assert entropy_loss(uniform).item() == pytest.approx(1.0, abs=1e-6)
    certain = F.one_hot(torch.zeros(2, 3, 3, dtype=torch.long), 19).permute(0, 3, 1, 2).float()
    assert entropy_loss(certain).item() == pytest.approx(0.0, abs=1e-6)


def trainer(**overrides) -> Trainer:
    source, target, evals = tiny_data()
    # SGD: Adam's first step divides by the gradient's own size, so it would blow up rounding
    config = tiny_config(multi_level=True, optimizer="sgd", lr=1e-2, **overrides)
    return Trainer(config, source, target, evals)


def bce(logits: torch.Tensor, label: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


def up(logits: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def reference_step(t: Trainer) -> None:
    """ADVENT's train_advent / train_minent iteration, from the paper: source CE (main + 0.1
    aux); target: the frozen D on the entropy map against the source label, and the weighted
    entropy; D on the detached source (0) then target (1) entropy maps, each halved."""
    cfg = t.cfg
    set_poly_lr(cfg, t.step_count, t.optimizer_g, list(t.optimizers_d.values()))
    for optimizer in (t.optimizer_g, *t.optimizers_d.values()):
        optimizer.zero_grad(set_to_none=True)
    images, labels = next(t.source_stream)
    aux, main = t.model(images)
    size = labels.shape[-2:]
    source = {"aux": up(aux, size), "main": up(main, size)}
    loss = F.cross_entropy(source["main"], labels.long(), ignore_index=255)
    loss = loss + cfg.lambda_seg_aux * F.cross_entropy(
        source["aux"], labels.long(), ignore_index=255
    )
    loss.backward()
    target_images = next(t.target_stream)
    target_images = target_images[0] if isinstance(target_images, list | tuple) else target_images
    aux, main = t.model(target_images)
    size = target_images.shape[-2:]
    target = {"aux": up(aux, size), "main": up(main, size)}
    adv = {"aux": cfg.lambda_adv_aux, "main": cfg.lambda_adv_main}
    ent = {"aux": cfg.lambda_ent_aux, "main": cfg.lambda_ent_main}
    for d in t.discriminators.values():
        d.requires_grad_(False)
    loss = 0.0
    for level in ("aux", "main"):
        prob = F.softmax(target[level], dim=1)
        if level in t.discriminators:
            loss = loss + adv[level] * bce(t.discriminators[level](entropy_map(prob)), 0.0)
        n, c, h, w = prob.shape
        entropy = -(prob * torch.log2(prob + 1e-30)).sum() / (n * h * w * math.log2(c))
        loss = loss + ent[level] * entropy
    loss.backward()
    for d in t.discriminators.values():
        d.requires_grad_(True)
    for domain, label in ((source, 0.0), (target, 1.0)):
        for level, d in t.discriminators.items():
            (bce(d(entropy_map(F.softmax(domain[level].detach(), dim=1))), label) / 2).backward()
    t.optimizer_g.step()
    for optimizer in t.optimizers_d.values():
        optimizer.step()


def assert_same(ours: Trainer, reference: Trainer) -> None:
    for (name, a), b in zip(
        ours.model.named_parameters(), reference.model.parameters(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name
    assert set(ours.discriminators) == set(reference.discriminators)
    for level, d in ours.discriminators.items():
        for a, b in zip(d.parameters(), reference.discriminators[level].parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-6, rtol=0), f"D_{level}"


@pytest.mark.parametrize(
    "method",
    [
        {"adapt_space": "entropy", "lambda_adv_main": 1e-2, "lambda_adv_aux": 2e-3},
        {"lambda_adv_main": 0.0, "lambda_adv_aux": 0.0, "lambda_ent_main": 0.5,
         "lambda_ent_aux": 0.1},
        {"adapt_space": "entropy", "lambda_adv_main": 1e-2, "lambda_adv_aux": 2e-3,
         "lambda_ent_main": 0.5, "lambda_ent_aux": 0.1},
    ],
    ids=["advent", "minent", "advent+minent"],
)  # fmt: skip
def test_one_step_equals_advents_iteration(method):
    ours, reference = trainer(**method), trainer(**method)  # seeded: the same weights and data
    before = [p.detach().clone() for p in ours.model.parameters()]
    losses = ours.step()
    reference_step(reference)
    assert_same(ours, reference)
    assert any(not torch.equal(a, b) for a, b in zip(before, ours.model.parameters()))
    if "lambda_ent_main" in method:
        assert {"loss_ent_trg_main", "loss_ent_trg_aux"} <= set(losses)


def test_minent_alone_builds_and_steps_no_discriminator():
    minent = trainer(lambda_adv_main=0.0, lambda_adv_aux=0.0, lambda_ent_main=1e-3)
    assert minent.discriminators == {} and minent.optimizers_d == {}
    losses = minent.step()
    assert not any(key.startswith(("loss_d_", "loss_adv_")) for key in losses)
    control = trainer(lambda_adv_main=0.0, lambda_adv_aux=0.0)  # the BN control keeps its D
    assert set(control.discriminators) == {"aux", "main"}


def test_the_entropy_of_a_source_only_or_single_level_run_is_refused_naming_the_key():
    base = {"source": "random", "target": "random"}
    with pytest.raises(ConfigError, match="lambda_ent_main.*use_target false"):
        build_config({**base, "use_target": False, "lambda_ent_main": 1e-3}, "t")
    with pytest.raises(ConfigError, match="lambda_ent_aux.*multi_level false"):
        build_config({**base, "multi_level": False, "lambda_ent_aux": 1e-3}, "t")


ADVENT_SPEC = Path(__file__).parents[1] / "search_spaces" / "advent.yaml"
ENV = {"GTA5_ROOT": "/data/gta5", "CITYSCAPES_ROOT": "/data/cs", "DEEPLAB_INIT": "/w.pth"}


def test_the_advent_spec_compares_the_entropy_arms_with_adaptsegnet_and_the_control(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    spec = load_spec(ADVENT_SPEC)
    pairs = comparisons(spec)
    assert pairs[:3] == [
        ("advent", "adaptsegnet"), ("minent", "adaptsegnet"), ("advent_minent", "adaptsegnet"),
    ]  # fmt: skip
    assert ("minent", "bn_control") in pairs and ("advent", "source_only") in pairs
    rows = {row["arm"]: row for row in arm_rows(spec)}
    assert rows["minent"]["role"] == "adapted" and rows["bn_control"]["role"] == "bn_control"
    assert "MinEnt" in rows["minent"]["method"] and "AdvEnt" not in rows["minent"]["method"]
    assert (
        "AdvEnt" in rows["advent_minent"]["method"] and "MinEnt" in rows["advent_minent"]["method"]
    )
    assert rows["advent"]["model"].endswith("4 ASPP branches")
    assert rows["adaptsegnet"]["model"].endswith("2 ASPP branches")
    # the space as the spec writes it, keys sorted (the spec lists lambda_ent_main first)
    assert json.loads(rows["minent"]["searched"]) == {
        "lambda_ent_aux": {"log_uniform": [2.0e-5, 2.0e-3]},
        "lambda_ent_main": {"log_uniform": [1.0e-4, 1.0e-2]},
        "lr": {"log_uniform": [1.0e-4, 1.0e-3]},
    }
    assert list(json.loads(rows["minent"]["searched"])) == [
        "lambda_ent_aux",
        "lambda_ent_main",
        "lr",
    ]


ADVENT_METHODS = {
    "source_only": ("source_only", "source only", 2, "output", False),
    "bn_control": ("bn_control", "BatchNorm control (target through G, no target loss)", 2,
                   "output", True),
    "adaptsegnet": ("adapted", "output-space adversarial (AdaptSegNet), multi-level", 2,
                    "output", True),
    "advent": ("adapted", "entropy-map adversarial (ADVENT's AdvEnt), multi-level", 4,
               "entropy", True),
    "minent": ("adapted", "entropy minimisation (ADVENT's MinEnt), multi-level", 4, "output",
               True),
    "advent_minent": ("adapted", "entropy-map adversarial (ADVENT's AdvEnt) + entropy "
                      "minimisation (ADVENT's MinEnt), multi-level", 4, "entropy", True),
}  # fmt: skip


def test_the_arms_table_says_what_each_advent_arm_trains_and_plans(monkeypatch):
    """Every column of the arms table but the searched space, for the spec as shipped and with
    its search repeated twice (each repeat plans its own search and confirm trials)."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    for repeats in (1, 2):
        spec = load_spec(ADVENT_SPEC, [f"search.repeats={repeats}"])
        rows = arm_rows(spec)
        assert [row["arm"] for row in rows] == list(ADVENT_METHODS)
        for order, row in enumerate(rows):
            role, method, branches, space, target = ADVENT_METHODS[row["arm"]]
            assert row == {
                **row,
                "study": "advent", "order": order, "role": role, "method": method,
                "multi_level": row["arm"] not in ("source_only", "bn_control"),
                "model": f"DeepLab-v2 resnet101, {branches} ASPP branches", "source": "gta5",
                "eval_classes": 19, "adapt_space": space, "use_target": target,
                "num_steps": 120000, "planned_search": 12 * repeats,
                "planned_confirm": 3 * repeats,
            }  # fmt: skip
    assert comparisons(spec) == [
        ("advent", "adaptsegnet"), ("minent", "adaptsegnet"), ("advent_minent", "adaptsegnet"),
        ("adaptsegnet", "bn_control"), ("advent", "bn_control"), ("minent", "bn_control"),
        ("advent_minent", "bn_control"), ("bn_control", "source_only"),
        ("adaptsegnet", "source_only"), ("advent", "source_only"), ("minent", "source_only"),
        ("advent_minent", "source_only"),
    ]  # fmt: skip


def test_a_fixed_weight_makes_a_method_and_an_unweighted_arm_is_the_control(monkeypatch):
    """What an arm does follows from its weights, fixed or searched: a MinEnt weight fixed
    above 0 (nothing searched) is MinEnt; an AdvEnt arm whose adversarial weights are fixed at 0
    and not searched is MinEnt alone, one left at the defaults is adversarial too; the levels
    spec's arms and pairs are the paper's."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    spec = load_spec(
        ADVENT_SPEC,
        [
            "arms.minent.lambda_ent_main=0.001", "search.space.lambda_ent_main.arms=[advent_minent]",
            "search.space.lambda_ent_aux.arms=[advent_minent]",
            "arms.advent.lambda_adv_main=0.0", "arms.advent.lambda_adv_aux=0.0",
            "arms.advent.lambda_ent_aux=0.0002",
            "search.space.lambda_adv_main.arms=[adaptsegnet]",
            "search.space.lambda_adv_aux.arms=[adaptsegnet]",
            "search.space.lr_d.arms=[bn_control]",
        ],
    )  # fmt: skip
    rows = {row["arm"]: row for row in arm_rows(spec)}
    assert rows["minent"]["method"] == "entropy minimisation (ADVENT's MinEnt), multi-level"
    assert rows["minent"]["role"] == "adapted"
    assert rows["advent"]["method"] == "entropy minimisation (ADVENT's MinEnt), multi-level"
    assert rows["advent_minent"]["method"] == (  # the default adversarial weights are above 0
        "entropy-map adversarial (ADVENT's AdvEnt) + entropy minimisation (ADVENT's MinEnt), "
        "multi-level"
    )
    assert ("minent", "adaptsegnet") in comparisons(spec)  # an entropy arm by its fixed weight
    levels = load_spec(Path(__file__).parents[1] / "search_spaces" / "levels.yaml")
    methods = {row["arm"]: row["method"] for row in arm_rows(levels)}
    assert methods == {
        "source_only": "source only",
        "bn_control": "BatchNorm control (target through G, no target loss)",
        "single_level": "output-space adversarial (AdaptSegNet), single-level",
        "multi_level": "output-space adversarial (AdaptSegNet), multi-level",
        "feature_level": "feature-space adversarial, single-level",
    }
    assert comparisons(levels) == [
        ("multi_level", "single_level"), ("feature_level", "single_level"),
        ("single_level", "bn_control"), ("multi_level", "bn_control"),
        ("feature_level", "bn_control"), ("bn_control", "source_only"),
        ("single_level", "source_only"), ("multi_level", "source_only"),
        ("feature_level", "source_only"),
    ]  # fmt: skip
    assert comparison_rows(levels)[:2] == [
        {"study": "levels", "order": 0, "arm": "multi_level", "baseline": "single_level"},
        {"study": "levels", "order": 1, "arm": "feature_level", "baseline": "single_level"},
    ]


def test_an_entropy_weight_searched_on_an_arm_without_the_target_is_refused(tmp_path, monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    raw = yaml.safe_load(ADVENT_SPEC.read_text())
    raw["search"]["space"]["lambda_ent_main"]["arms"].append("source_only")
    path = tmp_path / "advent.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as refused:
        load_spec(path)
    message = str(refused.value)
    assert "\n" not in message and "arms.source_only" in message
    assert "lambda_ent_main" in message and "use_target false" in message


@pytest.mark.slow
def test_smoke_runs_the_advent_spec_and_reports_every_arm(tmp_path, bench):  # noqa: F811
    env = {**ray_env(), "GTA5_ROOT": str(bench / "gta5"),
           "CITYSCAPES_ROOT": str(bench / "cityscapes")}  # fmt: skip
    env.pop("DEEPLAB_INIT", None)  # the small backbone needs no init weights
    results = tmp_path / "results"
    result = subprocess.run(
        study_command(ADVENT_SPEC, results, "--smoke"), capture_output=True, text=True,
        timeout=900, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    root = results / "advent-smoke"
    arms = {"source_only", "bn_control", "adaptsegnet", "advent", "minent", "advent_minent"}
    trials = pd.read_parquet(root / "tables" / "trials.parquet")
    assert set(trials["arm"]) == arms
    evals = pd.read_parquet(root / "tables" / "evals.parquet")
    minent = evals[evals["arm"] == "minent"]
    assert minent["loss_ent_trg_main"].notna().any() and minent["loss_d_main"].isna().all()
    summary = json.loads((root / "summary.json").read_text())
    assert set(summary["arms"]) == arms
    assert {"arm": "advent", "baseline": "adaptsegnet"}.items() <= summary["comparisons"][
        0
    ].items()
    report = (root / "report.html").read_text()
    assert "ADVENT&#x27;s AdvEnt" in report and "ran different models" in report
