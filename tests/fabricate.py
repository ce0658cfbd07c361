"""Made-up studies in Ray Tune's on-disk format, to test and benchmark export and report.

``fabricate(study_dir, ...)`` writes ``study.yaml``, ``provenance.json`` and one experiment per
stage with ``experiment_state-*.json`` and per-trial ``result.json`` files shaped exactly like
the ones ``study.run`` produces, with random numbers instead of training. Nothing here is ever
shown as a result of a real study.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from adaptseg.evaluation import CITYSCAPES_CLASSES

SPACE = {
    "lambda_adv_main": {"log_uniform": [1e-4, 1e-2], "arms": ["single_level", "multi_level"]},
    "lambda_adv_aux": {"log_uniform": [1e-5, 1e-3], "arms": ["multi_level"]},
    "lr": {"log_uniform": [1e-4, 1e-3]},
}
ARMS = {
    "source_only": {"use_target": False, "multi_level": False},
    "bn_control": {"multi_level": False, "lambda_adv_main": 0.0},
    "single_level": {"multi_level": False},
    "multi_level": {"multi_level": True},
}


def _row(rng, arm, stage, seed, step, iteration, quality, **extra) -> dict:
    iou = np.clip(quality + rng.normal(0, 0.08, len(CITYSCAPES_CLASSES)), 0, 1)
    row = {
        "arm": arm,
        "stage": stage,
        "seed": seed,
        "step": step,
        "split": "select",
        "training_iteration": iteration,
        "iterations_since_restore": iteration,
        "time_total_s": 2.0 * iteration,
        "compute_seconds": 1.8 * iteration,
        "images_per_second": 20.0,
        "lr": 2.5e-4,
        "lr_d": 1e-4,
        "status": "ok",
        "loss_seg_src_main": 1.0 / iteration,
        "loss_d_main": float(rng.uniform(0.2, 0.7)),
        "loss_adv_trg_main": float(rng.uniform(0.6, 1.2)),
        "miou": float(iou.mean()),
        **{f"iou_{c}": float(v) for c, v in zip(CITYSCAPES_CLASSES, iou, strict=True)},
    }
    if arm == "multi_level":
        row.update(loss_seg_src_aux=1.1 / iteration, loss_d_aux=0.5, loss_adv_trg_aux=0.8)
    row.update(extra)
    return row


def _write_experiment(experiment: Path, trials: list[tuple[str, dict, str, list[dict]]]) -> None:
    experiment.mkdir(parents=True, exist_ok=True)
    data = []
    for trial_id, config, status, rows in trials:
        folder = f"train_trial_{trial_id}"
        (experiment / folder).mkdir(exist_ok=True)
        (experiment / folder / "result.json").write_text(
            "".join(json.dumps(r) + "\n" for r in rows)
        )
        trial = {
            "trial_id": trial_id,
            "status": status,
            "config": config,
            "relative_logdir": folder,
        }
        data.append([json.dumps(trial), json.dumps({"error_filename": None})])
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": data, "runner_data": {}, "stats": {}})
    )


def fabricate(
    study_dir: Path,
    trials_per_arm: int = 6,
    evals: int = 5,
    seeds: tuple[int, ...] = (0, 1, 2),
    arms: dict[str, dict] | None = None,
    seed: int = 0,
) -> None:
    """Write a made-up study: ``trials_per_arm`` search trials per arm (a third stopped
    early), then one confirm trial per arm and seed, ``evals`` evaluations each."""
    rng = np.random.default_rng(seed)
    arms = arms or ARMS
    steps = [1000 * (i + 1) for i in range(evals)]
    spec = {
        "name": study_dir.name,
        "data": {"synthetic": {"root": "/nowhere"}},
        "train": {"num_steps": steps[-1], "eval_every": 1000},
        "arms": arms,
        "search": {
            "num_samples": trials_per_arm,
            "space": {
                k: v for k, v in SPACE.items() if not v.get("arms") or set(v["arms"]) & set(arms)
            },
        },
    }
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "study.yaml").write_text(yaml.safe_dump(spec))
    (study_dir / "provenance.json").write_text(
        json.dumps({"code_version": "fabricated", "python": "3", "packages": {}})
    )
    counter = 0
    quality = {arm: 0.3 + 0.05 * i for i, arm in enumerate(arms)}
    confirm = []
    for arm in arms:
        search = []
        for index in range(trials_per_arm):
            counter += 1
            params = {
                name: float(np.exp(rng.uniform(*np.log(d["log_uniform"]))))
                for name, d in spec["search"]["space"].items()
                if arm in (d.get("arms") or arms)
            }
            config = {"arm": arm, "stage": "search", **params}
            length = evals if index % 3 else max(1, evals // 3)
            rows = [
                _row(rng, arm, "search", 1234, steps[i], i + 1, quality[arm])
                for i in range(length)
            ]
            search.append((f"{counter:08x}", config, "TERMINATED", rows))
        _write_experiment(study_dir / "ray" / f"search-{arm}", search)
        for s in seeds:
            counter += 1
            config = {"case": {"arm": arm, "stage": "confirm", "rank": 0, "seed": s}}
            rows = [
                _row(rng, arm, "confirm", s, steps[i], i + 1, quality[arm]) for i in range(evals)
            ]
            rows += [
                _row(
                    rng,
                    arm,
                    "confirm",
                    s,
                    steps[-1],
                    evals + 1 + k,
                    quality[arm],
                    split="report",
                    model=m,
                )
                for k, m in enumerate(("final", "best_on_select"))
            ]
            confirm.append((f"{counter:08x}", config, "TERMINATED", rows))
    _write_experiment(study_dir / "ray" / "confirm", confirm)
