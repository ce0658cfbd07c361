"""The study YAML: schema, ``${ENV}`` expansion, ``--set`` overrides and complete validation.

Everything is checked before Ray starts: every train key against the trainer's config, every
distribution, every arm name. Errors are one line naming the file, the key path and what was
expected, with the closest valid key suggested.
"""

from __future__ import annotations

import builtins
import copy
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from adaptseg.config import (
    FIELDS,
    ConfigError,
    TrainConfig,
    build_config,
    closest_key,
    parse_overrides,
    parse_size,
    read_yaml_mapping,
)

ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
DISTRIBUTIONS = ("uniform", "log_uniform", "int", "categorical")


class SpecError(ValueError):
    """A bad study spec: one line naming the file, the key path and what was expected."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class DataSource(_Strict):
    kind: Literal["gta5", "synthia"] = "gta5"
    root: str
    list: str | None = None


class DataTarget(_Strict):
    kind: Literal["cityscapes"] = "cityscapes"
    root: str
    list: str | None = None


class SyntheticData(_Strict):
    """The synthetic benchmark, generated into ``root`` on first use."""

    root: str = "data/synthetic"
    seed: int = 0
    size: str = "128x256"
    counts: list[builtins.int] = [1000, 1000, 200]


class DataSpec(_Strict):
    source: DataSource | None = None
    target: DataTarget | None = None
    synthetic: SyntheticData | None = None


class Distribution(_Strict):
    """Exactly one of the four distributions, optionally limited to some arms."""

    uniform: list[float] | None = None
    log_uniform: list[float] | None = None
    int: list[builtins.int] | None = None
    categorical: list[Any] | None = None
    arms: list[str] | None = None

    @property
    def kind(self) -> str:
        return next(k for k in DISTRIBUTIONS if getattr(self, k) is not None)

    @property
    def bounds(self) -> Any:
        return getattr(self, self.kind)


class SamplerSpec(_Strict):
    kind: Literal["tpe", "random"] = "tpe"
    seed: int = 0
    multivariate: bool = True
    n_startup_trials: int = 10
    constant_liar: bool | Literal["auto"] = "auto"


class SearchSpec(_Strict):
    num_samples: int = 8
    sampler: SamplerSpec = SamplerSpec()
    space: dict[str, Distribution] = {}


class SchedulerSpec(_Strict):
    kind: Literal["asha", "none"] = "asha"
    grace_period: int = 10000
    reduction_factor: int = 3


class ConfirmSpec(_Strict):
    top_k: int = 1
    seeds: list[int] = [0, 1, 2]


class ResourcesSpec(_Strict):
    gpus_per_trial: float | Literal["auto"] = "auto"
    cpus_per_trial: float = 1.0
    max_concurrent_trials: int | None = None


class RaySpec(_Strict):
    address: str | None = None
    node_ip_address: str | None = None
    num_cpus: int | None = None


class CheckpointSpec(_Strict):
    every_evals: int = 1
    num_to_keep: int = 2
    every_minutes: float | None = None


class StudySpec(_Strict):
    name: str
    data: DataSpec
    train: dict[str, Any] = {}
    arms: dict[str, dict[str, Any]]
    search: SearchSpec = SearchSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    confirm: ConfirmSpec = ConfirmSpec()
    resources: ResourcesSpec = ResourcesSpec()
    ray: RaySpec = RaySpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    max_failures: int = 2
    storage: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", value) or value in (".", ".."):
            raise ValueError(f"expected 1 to 100 letters, digits, '_', '.' or '-', got {value!r}")
        return value


def _expand(value: Any, path: str, missing: dict[str, list[str]]) -> Any:
    if isinstance(value, dict):
        return {
            k: _expand(v, f"{path}.{k}" if path else str(k), missing) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", missing) for i, v in enumerate(value)]
    if isinstance(value, str):

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name not in os.environ:
                missing.setdefault(name, []).append(path)
                return match.group(0)
            return os.environ[name]

        return ENV_PATTERN.sub(replace, value)
    return value


def expand_env(value: Any, path: str, origin: str) -> Any:
    """Replace ``${NAME}`` in every string; unset variables are one error naming all of them
    (and where each is used), so a user learns everything needed in one run."""
    missing: dict[str, list[str]] = {}
    out = _expand(value, path, missing)
    if missing:
        listed = ", ".join(f"{name} ({', '.join(paths)})" for name, paths in missing.items())
        plural = "s" if len(missing) > 1 else ""
        raise SpecError(
            f"{origin}: environment variable{plural} not set: {listed} "
            "(export them, or set the keys with --set)"
        )
    return out


def apply_overrides(raw: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """``--set a.b.c=value`` on the raw YAML mapping (before validation)."""
    out = copy.deepcopy(raw)
    for dotted, value in parse_overrides(pairs).items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise SpecError(f"--set {dotted}: `{key}` is not a mapping")
        node[leaf] = value
    return out


def _pydantic_message(error: dict[str, Any], model: type[BaseModel]) -> str:
    loc = [str(p) for p in error.get("loc", ())]
    path = ".".join(loc)
    if error.get("type") == "extra_forbidden":
        parent: Any = model
        for part in loc[:-1]:
            field = getattr(parent, "model_fields", {}).get(part)
            annotation = getattr(field, "annotation", None)
            parent = annotation if isinstance(annotation, type) else None
        choices = list(getattr(parent, "model_fields", {})) if parent is not None else []
        return f"{path}: unknown key{closest_key(loc[-1], choices)}"
    if error.get("type") == "missing":
        return f"{path}: required key is missing"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{path}: {message}, got {error.get('input')!r}"


def _check_distribution(name: str, dist: Distribution, arms: list[str]) -> str | None:
    given = [k for k in DISTRIBUTIONS if getattr(dist, k) is not None]
    if len(given) != 1:
        return f"search.space.{name}: expected exactly one of {', '.join(DISTRIBUTIONS)}"
    kind, bounds = dist.kind, dist.bounds
    if kind in ("uniform", "log_uniform", "int"):
        if len(bounds) != 2:
            return f"search.space.{name}.{kind}: expected [low, high], got {bounds}"
        low, high = bounds
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            return f"search.space.{name}.{kind}: `low < high` must hold, but got [{low}, {high}]"
        if kind == "log_uniform" and low <= 0:
            return f"search.space.{name}.log_uniform: `low > 0` must hold, but got {low}"
    elif not bounds:
        return f"search.space.{name}.categorical: expected a non-empty list of choices"
    for arm in dist.arms or []:
        if arm not in arms:
            return f"search.space.{name}.arms: unknown arm `{arm}`{closest_key(arm, arms)}"
    return None


def _validate(spec: StudySpec, origin: str) -> None:
    if not spec.arms:
        raise SpecError(f"{origin}: arms: expected at least one arm")
    arms = list(spec.arms)
    for name, dist in spec.search.space.items():
        if name not in FIELDS:
            raise SpecError(
                f"{origin}: search.space.{name}: not a train key{closest_key(name, FIELDS)}"
            )
        problem = _check_distribution(name, dist, arms)
        if problem:
            raise SpecError(f"{origin}: {problem}")
        for arm in dist.arms or arms:
            if name in spec.arms[arm]:
                raise SpecError(
                    f"{origin}: search.space.{name}: arm `{arm}` fixes {name}; "
                    f"limit the parameter with `arms:` or remove it from the arm"
                )
    for key in spec.train:
        if key not in FIELDS:
            raise SpecError(f"{origin}: train.{key}: unknown key{closest_key(key, FIELDS)}")
    for arm, values in spec.arms.items():
        for key in values:
            if key not in FIELDS:
                raise SpecError(
                    f"{origin}: arms.{arm}.{key}: unknown key{closest_key(key, FIELDS)}"
                )
    checks = [
        (spec.search.num_samples > 0, "search.num_samples", "expected a positive integer"),
        (spec.scheduler.grace_period > 0, "scheduler.grace_period", "expected a positive integer"),
        (spec.scheduler.reduction_factor >= 2, "scheduler.reduction_factor", "expected >= 2"),
        (spec.confirm.top_k >= 0, "confirm.top_k", "expected an integer >= 0"),
        (len(set(spec.confirm.seeds)) == len(spec.confirm.seeds), "confirm.seeds",
         "expected distinct seeds"),
        (spec.resources.cpus_per_trial > 0, "resources.cpus_per_trial",
         "expected a positive number"),
        (spec.resources.gpus_per_trial == "auto" or spec.resources.gpus_per_trial >= 0,
         "resources.gpus_per_trial", "expected 'auto' or a number >= 0"),
        (spec.checkpoint.every_evals > 0, "checkpoint.every_evals", "expected a positive integer"),
        (spec.checkpoint.num_to_keep > 0, "checkpoint.num_to_keep", "expected a positive integer"),
        (spec.checkpoint.every_minutes is None or spec.checkpoint.every_minutes > 0,
         "checkpoint.every_minutes", "expected a positive number or null"),
        (spec.max_failures >= 0, "max_failures", "expected an integer >= 0"),
    ]  # fmt: skip
    for ok, key, message in checks:
        if not ok:
            raise SpecError(f"{origin}: {key}: {message}")
    synthetic = spec.data.synthetic
    if synthetic is not None:
        try:
            parse_size(synthetic.size)
        except ValueError as exc:
            raise SpecError(f"{origin}: data.synthetic.size: {exc}") from None
        if len(synthetic.counts) != 3 or min(synthetic.counts) <= 0:
            raise SpecError(
                f"{origin}: data.synthetic.counts: expected three positive integers "
                f"[source, target train, target val], got {synthetic.counts}"
            )
    if synthetic is None and (spec.data.source is None or spec.data.target is None):
        raise SpecError(
            f"{origin}: data: expected either `synthetic` or both `source` and `target`"
        )


def data_settings(spec: StudySpec) -> dict[str, Any]:
    """The train keys that the data section stands for."""
    if spec.data.synthetic is not None:
        root = Path(spec.data.synthetic.root)
        return {
            "source": "gta5", "source_root": str(root / "gta5"),
            "target": "cityscapes", "target_root": str(root / "cityscapes"),
        }  # fmt: skip
    assert spec.data.source is not None and spec.data.target is not None
    return {
        "source": spec.data.source.kind, "source_root": spec.data.source.root,
        "source_list": spec.data.source.list, "target": spec.data.target.kind,
        "target_root": spec.data.target.root, "target_list": spec.data.target.list,
    }  # fmt: skip


def arm_config(
    spec: StudySpec, arm: str, sampled: dict[str, Any] | None = None, seed: int | None = None
) -> TrainConfig:
    """Base train keys, then the data section, then sampled values, then the arm's settings."""
    values = {**spec.train, **data_settings(spec), **(sampled or {}), **spec.arms[arm]}
    if seed is not None:
        values["seed"] = seed
    return build_config(values, origin=f"arm {arm}")


def representative_sample(dist: Distribution) -> Any:
    kind, bounds = dist.kind, dist.bounds
    if kind == "categorical":
        return bounds[0]
    if kind == "log_uniform":
        return math.sqrt(bounds[0] * bounds[1])
    if kind == "int":
        return int(bounds[0])
    return (bounds[0] + bounds[1]) / 2


def _absolute_roots(raw: dict[str, Any]) -> None:
    """Data roots relative to where the command runs: trial workers may run elsewhere."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    for section in ("source", "target", "synthetic"):
        node = data.get(section)
        for key in ("root", "list"):
            if isinstance(node, dict) and isinstance(node.get(key), str) and node[key]:
                node[key] = str(Path(node[key]).expanduser().absolute())


def load_spec(path: str | Path, overrides: list[str] | None = None) -> StudySpec:
    """Read, expand, override and validate a study YAML completely (no Ray, no data access)."""
    origin = str(path)
    try:
        raw = read_yaml_mapping(path)
    except ConfigError as exc:
        raise SpecError(str(exc)) from None
    raw = apply_overrides(raw, list(overrides or []))
    raw = expand_env(raw, "", origin)
    _absolute_roots(raw)
    try:
        spec = StudySpec(**raw)
    except ValidationError as exc:
        raise SpecError(f"{origin}: {_pydantic_message(exc.errors()[0], StudySpec)}") from None
    except TypeError as exc:
        raise SpecError(f"{origin}: {exc}") from None
    _validate(spec, origin)
    for arm in spec.arms:
        sampled = {
            name: representative_sample(dist)
            for name, dist in spec.search.space.items()
            if arm in (dist.arms or spec.arms)
        }
        try:
            arm_config(spec, arm, sampled)
        except ConfigError as exc:
            message = str(exc).removeprefix(f"arm {arm}: ")
            raise SpecError(f"{origin}: arms.{arm} (with train): {message}") from None
    return spec
