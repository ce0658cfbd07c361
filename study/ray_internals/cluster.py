"""Starting or joining Ray, and what its nodes have.

``ray.init`` rewrites ``127.0.0.1`` and ``localhost`` to the machine's outward address; only
its private ``_node_ip_address`` keeps a Ray started here on another loopback address (the
tests pin theirs to 127.0.0.2), which this module alone passes.
"""

from __future__ import annotations

import os
from typing import Any

import ray

Node = tuple[float, float]  # (CPUs, GPUs) of one alive node


def connect(address: str | None, node_ip: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address``, or start a Ray of ``num_cpus`` here (never attaching to
    one that ``ray start`` left behind on this machine); pinned to ``node_ip`` when given. The
    dashboard stays off and workers' output stays in their logs."""
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # relative data paths keep working
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if node_ip:
        kwargs["_node_ip_address"] = node_ip
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=num_cpus, **kwargs)


def disconnect() -> None:
    ray.shutdown()


def nodes() -> list[Node]:
    """The alive nodes of the Ray this process is connected to."""
    alive: list[dict[str, Any]] = [n for n in ray.nodes() if n.get("Alive")]
    resources = [n.get("Resources", {}) for n in alive]
    return [(float(r.get("CPU", 0.0)), float(r.get("GPU", 0.0))) for r in resources]
