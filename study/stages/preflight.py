"""Checks the run would otherwise fail on late, made before anything is written or started:
the results folder can be written, every arm's data roots and init weights load, and the
resources fit the Ray cluster the trials run on.

Ray Tune does not refuse a trial that asks for more CPUs or GPUs than any node has: the trial
stays PENDING for ever, and after a minute Ray warns about a ``ScalingConfig`` the user never
wrote. The same function checks the dry-run (against the Ray this command would start, or the
``--address`` cluster) and the run (against the cluster Ray joined), so both say the same line.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from adaptseg.config import parse_size
from adaptseg.data.build import build_datasets
from adaptseg.data.synthetic import ensure_benchmark
from adaptseg.models import (
    FCDiscriminator,
    InitWeightsError,
    build_generator,
    load_discriminator_weights,
    load_init_weights,
)
from study.errors import SpecError
from study.ray_internals import cluster
from study.ray_internals.cluster import Node
from study.records.folder import StudyPaths
from study.spec.arms import arm_config
from study.spec.schema import ResourcesSpec, StudySpec


def check_resources(resources: ResourcesSpec, nodes: list[Node], where: str) -> float:
    """The GPUs each trial asks for (``auto``: 1 when a node has a GPU, else 0), once some
    node can give a trial both its CPUs and its GPUs.

    Raises:
        SpecError: no node of ``where`` can ever run a trial (one line naming the key).
    """
    largest_cpus = max((cpus for cpus, _ in nodes), default=0.0)
    largest_gpus = max((gpus for _, gpus in nodes), default=0.0)
    wanted = resources.gpus_per_trial
    gpus = (1.0 if largest_gpus > 0 else 0.0) if wanted == "auto" else float(wanted)
    if gpus > largest_gpus:
        raise SpecError(
            f"resources.gpus_per_trial: {gpus:g} GPU(s) per trial asked for, but the largest "
            f"node of {where} has {largest_gpus:g}"
        )
    if resources.cpus_per_trial > largest_cpus:
        raise SpecError(
            f"resources.cpus_per_trial: {resources.cpus_per_trial:g} CPU(s) per trial asked "
            f"for, but the largest node of {where} has {largest_cpus:g} (a trial would wait "
            "for ever)"
        )
    if not any(c >= resources.cpus_per_trial and g >= gpus for c, g in nodes):
        raise SpecError(
            f"resources: no node of {where} has both {resources.cpus_per_trial:g} CPU(s) and "
            f"{gpus:g} GPU(s) for a trial"
        )
    return gpus


def trial_slots(resources: ResourcesSpec, nodes: list[Node], gpus: float) -> int:
    """How many trials run at once: ``max_concurrent_trials``, else as many as the nodes'
    CPUs (and GPUs, when trials ask for them) hold. The search's ask order depends on it, so
    the same spec on the same cluster decides the same way."""
    fits = 0
    for cpus, node_gpus in nodes:
        count = int(cpus // resources.cpus_per_trial)
        if gpus > 0:
            count = min(count, int(node_gpus // gpus))
        fits += count
    fits = max(fits, 1)
    limit = resources.max_concurrent_trials
    return min(limit, fits) if limit is not None else fits


def local_nodes(spec: StudySpec) -> list[Node]:
    """The node of the Ray this command starts: ``ray.num_cpus`` (or every core) and the GPUs
    torch sees."""
    cpus = spec.ray.num_cpus or os.cpu_count() or 1
    return [(float(cpus), float(torch.cuda.device_count()))]


def preflight_resources(spec: StudySpec, address: str | None, node_ip: str | None) -> str:
    """The dry-run's resource check; returns a line saying what it was checked against."""
    address = address or spec.ray.address
    if not address:
        check_resources(spec.resources, local_nodes(spec), "the Ray cluster")
        return "resources: checked against the Ray this command starts"
    cluster.connect(address, node_ip or spec.ray.node_ip_address)
    try:
        nodes = cluster.nodes()
    finally:
        cluster.disconnect()
    check_resources(spec.resources, nodes, "the Ray cluster")
    return f"resources: checked against the Ray cluster at {address} ({len(nodes)} node(s))"


def check_writable(paths: StudyPaths, origin: str) -> None:
    """The study directory must be creatable: checked before anything is written or started."""
    existing = paths.root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError(
            f"{origin}: cannot write the study directory {paths.root} "
            f"({existing} is not a writable folder); choose another --results"
        )


def check_data(spec: StudySpec, generate: bool) -> None:
    """Build every arm's datasets (cheap checks) so bad roots fail before Ray starts."""
    if spec.data.synthetic is not None:
        if not generate:
            return
        synthetic = spec.data.synthetic
        ensure_benchmark(
            Path(synthetic.root),
            synthetic.seed,
            parse_size(synthetic.size),
            tuple(synthetic.counts),
        )
    for arm in spec.arms:
        build_datasets(arm_config(spec, arm), eval_parts=["select", "report"])


def check_init_weights(spec: StudySpec, origin: str) -> None:
    """Every arm's ``init_weights`` file loads and fills its backbone (the 95% rule), and its
    discriminator files fit, once per file and model: a bad file would otherwise fail every
    trial of the study."""
    checked = set()
    for arm in spec.arms:
        cfg = arm_config(spec, arm)
        files = (cfg.init_weights, cfg.init_discriminator_aux, cfg.init_discriminator_main)
        key = (
            cfg.backbone,
            cfg.multi_level,
            cfg.adapt_space,
            cfg.ndf,
            cfg.num_classes,
            files,
            cfg.min_init_match,
        )
        if not any(files) or key in checked:
            continue
        checked.add(key)
        model = build_generator(cfg.num_classes, cfg.backbone, cfg.multi_level)
        try:
            if cfg.init_weights is not None:
                load_init_weights(model, cfg.init_weights, cfg.min_init_match)
            for level, path in (("aux", files[1]), ("main", files[2])):
                if path is not None:
                    feature = cfg.adapt_space == "feature"
                    channels = model.feature_channels[level] if feature else cfg.num_classes
                    load_discriminator_weights(FCDiscriminator(channels, cfg.ndf), path)
        except InitWeightsError as exc:
            raise SpecError(f"{origin}: init weights (arm {arm}): {exc}") from None
