"""What a study will cost before it runs: device-hours and disk, per stage and in total.

Device time comes from measured seconds per training step and per evaluated image, for each
distinct model the arms train (backbone, levels, adaptation space, sizes, fast-mode keys), in
this order of preference:

1. the study's own trials (a study that has run, is running or grows);
2. a calibration on this machine (``--dry-run --calibrate`` times a few steps and a few
   evaluation images of each model, and caches the figure per device in
   ``$XDG_CACHE_HOME/adaptseg-study/step-times.json``);
3. a figure recorded with the project for this device kind (``step_times.json`` beside this
   module, measured by ``--calibrate`` on the machines it names).

Each figure names the device it was measured on. Disk is computed: the checkpoints Ray keeps
per trial (the trainer's complete state: G, both discriminators, their optimisers), Ray's
per-trial records, the tables and the report.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adaptseg.config import TrainConfig
from adaptseg.data.build import build_datasets
from adaptseg.data.errors import DataError
from adaptseg.devices import detect, resolve_amp
from adaptseg.models import FCDiscriminator, build_generator
from adaptseg.trainer import Trainer, resolve_device
from study.records.folder import StudyPaths
from study.spec.arms import arm_config
from study.spec.schema import StudySpec

RECORDED = Path(__file__).with_name("step_times.json")
CALIBRATION_STEPS, CALIBRATION_IMAGES = 3, 4
# Measured on this project's studies: a report row in Ray's records with its 19 class IoUs, the
# same in the tables, and the report's fixed part (plotly.js) plus its per-trial share.
RECORD_BYTES_PER_EVAL, TABLE_BYTES_PER_EVAL = 3_000, 2_500
REPORT_BYTES, REPORT_BYTES_PER_TRIAL = 4_700_000, 6_000


@dataclass(frozen=True)
class StepTime:
    """Seconds per training step and per evaluated image of one model on one device."""

    step_s: float
    image_s: float
    device: str
    source: str  # where the figure comes from: this study, a calibration, the recorded table


def model_key(cfg: TrainConfig, amp: str) -> str:
    """What decides a step's time (not the lambdas or learning rates)."""
    size = f"{cfg.input_size_source[0]}x{cfg.input_size_source[1]}"
    target = f"{cfg.input_size_target[0]}x{cfg.input_size_target[1]}"
    return (
        f"{cfg.backbone} levels={'multi' if cfg.multi_level else 'single'} "
        f"space={cfg.adapt_space} target={cfg.use_target} src={size} trg={target} "
        f"batch={cfg.batch_size}x{cfg.iter_size} ndf={cfg.ndf} classes={cfg.num_classes} "
        f"aspp={cfg.aspp_branches} amp={amp} channels_last={cfg.channels_last} "
        f"upsample={cfg.upsample}"
    )


def device_and_amp(cfg: TrainConfig) -> tuple[str, str]:
    """(the device's label, the amp ``cfg`` resolves to on it): where a figure applies."""
    capabilities = detect(resolve_device(cfg.device))
    return capabilities.label, resolve_amp(cfg.amp, capabilities)


def device_kind(cfg: TrainConfig) -> str:
    """The device's kind (``cpu AVX2``, ``cpu AMX``, ``cuda sm_90``): what a recorded figure is
    keyed by, since the machine itself differs (cores and clock differ too: an estimate)."""
    capabilities = detect(resolve_device(cfg.device))
    if capabilities.kind == "cuda" and capabilities.cuda_capability is not None:
        major, minor = capabilities.cuda_capability
        return f"cuda sm_{major}{minor}"
    return f"cpu {capabilities.cpu_isa}"


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "adaptseg-study" / "step-times.json"


def _read(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def calibrate(cfg: TrainConfig, threads: int) -> StepTime:
    """Time ``CALIBRATION_STEPS`` training steps (after one to warm up) and a few evaluation
    images of the model ``cfg`` trains, on the data it names, here, with the CPU threads a trial
    gets (Ray sets a trial's threads to its CPUs); cache the figure."""
    device, amp = device_and_amp(cfg)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _calibrate(cfg, device, amp)
    finally:
        torch.set_num_threads(previous)


def _calibrate(cfg: TrainConfig, device: str, amp: str) -> StepTime:
    quick = cfg.model_copy(update={"num_workers": 0, "eval_limit": CALIBRATION_IMAGES})
    try:
        data = build_datasets(quick, eval_parts=["select"])
    except DataError:  # not there yet (a synthetic benchmark is made by the first run)
        quick = quick.model_copy(update={"source": "random", "target": "random"})
        data = build_datasets(quick, eval_parts=["select"])
    trainer = Trainer(quick, data.source, data.target, data.eval_sets)
    trainer.step()
    started = trainer.train_seconds
    for _ in range(CALIBRATION_STEPS):
        trainer.step()
    step_s = (trainer.train_seconds - started) / CALIBRATION_STEPS
    begun = time.perf_counter()
    trainer.evaluate("select")
    images = min(CALIBRATION_IMAGES, len(data.eval_sets["select"]))
    image_s = (time.perf_counter() - begun) / max(images, 1)
    stamp = time.strftime("%Y-%m-%d")
    figure = StepTime(step_s, image_s, device, f"calibrated here on {stamp}")
    cache = _cache_file()
    entries = _read(cache)
    entries[f"{device} | {model_key(cfg, amp)}"] = {
        "step_s": step_s,
        "image_s": image_s,
        "measured": stamp,
        "device": device,
        "kind": device_kind(cfg),
        "model": model_key(cfg, amp),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return figure


def known_step_time(cfg: TrainConfig) -> StepTime | None:
    """A calibration cached on this machine, else the figure recorded with the project for
    this device's kind (``step_times.json``, keyed ``<kind> | <model>``)."""
    device, amp = device_and_amp(cfg)
    entry = _read(_cache_file()).get(f"{device} | {model_key(cfg, amp)}")
    if entry:
        source = f"calibrated here on {entry['measured']}"
        return StepTime(entry["step_s"], entry["image_s"], device, source)
    kind = device_kind(cfg)
    entry = _read(RECORDED).get(f"{kind} | {model_key(cfg, amp)}")
    if entry:
        source = f"recorded with the project on {entry['measured']} for a {kind} machine"
        return StepTime(entry["step_s"], entry["image_s"], entry["device"], source)
    return None


def record(entries: list[dict[str, Any]]) -> None:
    """Add calibrations (``calibrate``'s cache entries) to the project's recorded figures,
    keyed by device kind (``benchmarks/step_times.py``)."""
    table = _read(RECORDED)
    for entry in entries:
        table[f"{entry['kind']} | {entry['model']}"] = entry
    RECORDED.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")


def study_step_time(spec: StudySpec, paths: StudyPaths, arm: str) -> StepTime | None:
    """What the study's own recorded trials of ``arm`` measured (None before any trained)."""
    import pandas as pd

    table = paths.table("trials")
    if not table.is_file():
        return None
    trials = pd.read_parquet(table)
    rows = trials[(trials["arm"] == arm) & trials["compute_seconds"].notna()]
    steps = rows["step_reached"].sum()
    if not steps:
        return None
    device = str(rows["device"].dropna().iloc[-1]) if rows["device"].notna().any() else "?"
    # compute_seconds holds training and evaluation; spread over the steps it is the figure
    # a trial of this arm costs per step, evaluation included.
    return StepTime(
        float(rows["compute_seconds"].sum() / steps),
        0.0,
        device,
        f"measured by this study's {len(rows)} trials of {arm}",
    )


def checkpoint_bytes(cfg: TrainConfig) -> int:
    """The trainer's complete state of one checkpoint: G (parameters and BatchNorm statistics)
    with its SGD momentum (or Adam's two moments), and each level's D with Adam's moments."""
    model = build_generator(cfg.num_classes, cfg.backbone, cfg.multi_level, cfg.aspp_branches)
    g_all = sum(t.numel() for t in model.state_dict().values())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    moments = 2 if cfg.optimizer == "adam" else 1
    total = g_all + moments * trainable
    if cfg.use_target:
        for level in ("aux", "main") if cfg.multi_level else ("main",):
            feature = cfg.adapt_space == "feature"
            channels = model.feature_channels[level] if feature else cfg.num_classes
            d = sum(p.numel() for p in FCDiscriminator(channels, cfg.ndf).parameters())
            total += 3 * d
    return 4 * total


def asha_share(spec: StudySpec, steps: int) -> float:
    """The expected share of its steps a search trial trains under ASHA: past each rung one
    trial in ``reduction_factor`` goes on (an estimate; the first trials always finish)."""
    if spec.scheduler.kind != "asha":
        return 1.0
    grace, factor = spec.scheduler.grace_period, spec.scheduler.reduction_factor
    rungs = [grace * factor**k for k in range(int(math.log(steps / grace, factor) + 1e-9) + 1)]
    rungs = [r for r in rungs if r < steps] + [steps]
    expected, previous = 0.0, 0
    for index, rung in enumerate(rungs):
        expected += (rung - previous) / factor**index
        previous = rung
    return expected / steps


@dataclass(frozen=True)
class StageCost:
    stage: str
    trials: int
    hours_most: float  # with no early stopping
    hours: float  # expected (ASHA's share for a search)
    disk_bytes: int


def stage_costs(
    spec: StudySpec, figures: dict[str, StepTime], eval_images: int
) -> list[StageCost]:
    """Each search stage and the confirm stage: trials, device-hours (each trial on one
    device; ``gpus_per_trial`` fractions pack several on one, each slower), disk."""
    keep = spec.checkpoint.num_to_keep
    repeats = getattr(spec.search, "repeats", 1)
    out = []
    confirm_hours, confirm_disk, confirm_trials = 0.0, 0, 0
    for arm in spec.arms:
        cfg = arm_config(spec, arm)
        figure = figures[arm]
        evals = cfg.num_steps // cfg.eval_every
        limit = cfg.eval_limit or eval_images
        trial_s = cfg.num_steps * figure.step_s + evals * limit * figure.image_s
        share = asha_share(spec, cfg.num_steps)
        trials = spec.search.num_samples * repeats
        per_trial = keep * checkpoint_bytes(cfg) + evals * (
            RECORD_BYTES_PER_EVAL + TABLE_BYTES_PER_EVAL
        )
        out.append(
            StageCost(
                f"search {arm}",
                trials,
                trials * trial_s / 3600,
                trials * trial_s * share / 3600,
                trials * per_trial,
            )
        )
        confirmed = spec.confirm.top_k * len(spec.confirm.seeds) * repeats
        report_s = 2 * (cfg.eval_limit or eval_images) * figure.image_s
        confirm_trials += confirmed
        confirm_hours += confirmed * (trial_s + report_s) / 3600
        confirm_disk += confirmed * (per_trial + 2 * RECORD_BYTES_PER_EVAL)
    if confirm_trials:
        out.append(
            StageCost("confirm", confirm_trials, confirm_hours, confirm_hours, confirm_disk)
        )
    return out


def _size(num_bytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes / 1e3:.0f} kB"


def cost_lines(spec: StudySpec, paths: StudyPaths, calibrate_here: bool) -> list[str]:
    """The dry-run's cost: per stage and in total, device-hours and disk, and where each step
    time was measured; for an arm with no step time, its disk and what to run."""
    figures: dict[str, StepTime] = {}
    by_model: dict[str, StepTime] = {}
    missing = []
    for arm in spec.arms:
        cfg = arm_config(spec, arm)
        key = model_key(cfg, device_and_amp(cfg)[1])
        figure = study_step_time(spec, paths, arm)
        if figure is None and key in by_model:
            figure = by_model[key]
        if figure is None and calibrate_here:
            print(f"calibrating {arm} ({key}) ...", flush=True)
            figure = calibrate(cfg, threads=max(int(spec.resources.cpus_per_trial), 1))
        figure = figure or known_step_time(cfg)
        if figure is None:
            missing.append(arm)
            continue
        figures[arm] = by_model.setdefault(key, figure)
    cfg = arm_config(spec, next(iter(spec.arms)))
    try:
        images = len(build_datasets(cfg, eval_parts=["select"]).eval_sets["select"])
    except DataError:  # a synthetic benchmark not made yet: the size the spec asks for
        counts = spec.data.synthetic.counts if spec.data.synthetic else [0, 0, 0]
        images = counts[2] // 2
    # Disk needs no step time: an arm without one is priced at zero hours, and said unknown.
    unknown = StepTime(0.0, 0.0, "?", "unknown")
    costs = stage_costs(spec, {arm: figures.get(arm, unknown) for arm in spec.arms}, images)
    lines = [
        "cost (device-hours at one device per trial; disk: checkpoints kept, Ray's records "
        "and the tables):"
    ]
    for cost in costs:
        stage_arms = missing if cost.stage == "confirm" else [cost.stage.split(" ", 1)[1]]
        if set(stage_arms) & set(missing):
            hours = "device-hours unknown"
        else:
            early = (
                f", about {cost.hours:.2f} h under ASHA" if cost.hours < cost.hours_most else ""
            )
            hours = f"at most {cost.hours_most:.2f} h{early}"
        lines.append(f"  {cost.stage}: {cost.trials} trials, {hours}; {_size(cost.disk_bytes)}")
    trials = sum(c.trials for c in costs)
    disk = sum(c.disk_bytes for c in costs) + REPORT_BYTES + trials * REPORT_BYTES_PER_TRIAL
    if missing:
        hours = "device-hours unknown"
    else:
        total_most, total = sum(c.hours_most for c in costs), sum(c.hours for c in costs)
        hours = f"at most {total_most:.2f} device-hours (about {total:.2f} under ASHA)"
    lines.append(f"  total: {trials} trials, {hours}; {_size(disk)} of disk, the report included")
    if missing:
        lines.append(
            f"  no step time is known on this machine for arm(s) {', '.join(missing)}; "
            "--dry-run --calibrate times a few steps of each model here"
        )
    seen = {}
    for arm, figure in figures.items():
        seen.setdefault((figure.device, figure.source), []).append(
            f"{arm} {figure.step_s:.3g} s/step"
        )
    for (device, source), arms in seen.items():
        lines.append(f"  step times on {device} ({source}): {', '.join(arms)}")
    return lines
