"""Where a study lives on disk and what it will run (no Ray needed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.spec import StudySpec, arm_config


class Interrupted(Exception):
    """The study was stopped by a signal; running the same command resumes it."""


class StudyIncomplete(Exception):
    """Ray Tune finished but planned trials are missing or errored (exit 1, not 0)."""


@dataclass(frozen=True)
class StudyPaths:
    """The local study directory; Ray's experiments live there too unless ``storage`` names a
    shared folder or a pyarrow URI (then the Optuna database and the tables stay local)."""

    root: Path
    storage: str | None = None

    @classmethod
    def for_spec(cls, spec: StudySpec, results: Path) -> StudyPaths:
        storage = spec.storage
        if storage is not None and "://" not in storage:
            storage = str(Path(storage).absolute())
        return cls((results / spec.name).resolve(), storage)

    @property
    def spec_file(self) -> Path:
        return self.root / "study.yaml"

    @property
    def optuna_db(self) -> Path:
        return self.root / "optuna.db"

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.optuna_db}"

    @property
    def experiments(self) -> str:
        if self.storage is None:
            return str(self.root / "ray")
        return f"{self.storage.rstrip('/')}/{self.root.name}"

    @property
    def confirm_plan(self) -> Path:
        return self.root / "confirm_plan.json"

    @property
    def provenance(self) -> Path:
        return self.root / "provenance.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def best_configs(self) -> Path:
        return self.root / "best"

    def experiment(self, name: str) -> str:
        return f"{self.experiments}/{name}"


def flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (for naming what changed)."""
    if not isinstance(values, dict):
        return {prefix: values}
    out: dict[str, Any] = {}
    for key, value in values.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def search_experiment(arm: str) -> str:
    return f"search-{arm}"


CONFIRM_EXPERIMENT = "confirm"


def describe_plan(spec: StudySpec, paths: StudyPaths) -> str:
    """The --dry-run text: arms, stages, trial counts, resources, steps per trial."""
    lines = [f"study {spec.name} -> {paths.root}"]
    gpus = spec.resources.gpus_per_trial
    lines.append(
        f"resources: {gpus} GPU(s) and {spec.resources.cpus_per_trial:g} CPU(s) per trial, "
        f"at most {spec.resources.max_concurrent_trials or 'as many as fit'} at a time"
    )
    asha = spec.scheduler
    scheduler = (
        f"ASHA (grace {asha.grace_period} steps, reduction {asha.reduction_factor})"
        if asha.kind == "asha"
        else "no early stopping"
    )
    total = 0
    for arm in spec.arms:
        cfg = arm_config(spec, arm)
        params = list(spec.searched(arm))
        confirm = spec.confirm.top_k * len(spec.confirm.seeds)
        total += spec.search.num_samples + confirm
        lines.append(
            f"arm {arm}: search {spec.search.num_samples} trials over "
            f"[{', '.join(params) or 'nothing'}] with {scheduler}; confirm {confirm} trials "
            f"(top {spec.confirm.top_k} x seeds {spec.confirm.seeds}); {cfg.num_steps} steps "
            f"per trial, evaluation every {cfg.eval_every}"
        )
    lines.append(f"total: {total} trials")
    return "\n".join(lines)
