"""Checks the run would otherwise fail on late: resources against the Ray cluster they run on.

Ray Tune does not refuse a trial that asks for more CPUs or GPUs than any node has: the trial
stays PENDING for ever, and after a minute Ray warns about a ``ScalingConfig`` the user never
wrote. The same function checks the dry-run (against the Ray this command would start, or the
``--address`` cluster) and the run (against the cluster Ray joined), so both say the same line.
"""

from __future__ import annotations

import os
from typing import Any

from study.spec import ResourcesSpec, SpecError, StudySpec

Node = tuple[float, float]  # (CPUs, GPUs) of one alive node


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


def local_nodes(spec: StudySpec) -> list[Node]:
    """The node of the Ray this command starts: ``ray.num_cpus`` (or every core) and the GPUs
    torch sees."""
    import torch

    cpus = spec.ray.num_cpus or os.cpu_count() or 1
    return [(float(cpus), float(torch.cuda.device_count()))]


def cluster_nodes() -> list[Node]:
    """The alive nodes of the Ray this process is connected to."""
    import ray

    alive: list[dict[str, Any]] = [n for n in ray.nodes() if n.get("Alive")]
    resources = [n.get("Resources", {}) for n in alive]
    return [(float(r.get("CPU", 0.0)), float(r.get("GPU", 0.0))) for r in resources]


def preflight_resources(spec: StudySpec, address: str | None, node_ip: str | None) -> str:
    """The dry-run's resource check; returns a line saying what it was checked against."""
    address = address or spec.ray.address
    if not address:
        check_resources(spec.resources, local_nodes(spec), "the Ray cluster")
        return "resources: checked against the Ray this command starts"
    import ray

    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if node_ip or spec.ray.node_ip_address:
        kwargs["_node_ip_address"] = node_ip or spec.ray.node_ip_address
    ray.init(address=address, **kwargs)
    try:
        nodes = cluster_nodes()
    finally:
        ray.shutdown()
    check_resources(spec.resources, nodes, "the Ray cluster")
    return f"resources: checked against the Ray cluster at {address} ({len(nodes)} node(s))"
