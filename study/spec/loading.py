"""Reading a study YAML: ``--set`` overrides, ``${ENV}`` expansion, relative paths, and every
check the schema alone cannot make.

Everything is checked before Ray starts: every train key against the trainer's config, every
distribution (by building the Optuna distribution it stands for), every arm name, and train
keys that no arm would ever use. Errors are one line naming the file, the key path and what was
expected, with the closest valid key suggested. Relative paths in the file are relative to the
file's folder (``--set`` values to the current folder), so a study runs the same from anywhere.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from adaptseg.config import FIELDS, ConfigError, parse_overrides, read_yaml_mapping
from adaptseg.schema import closest_key, describe, key_name
from study.errors import SpecError
from study.spec.arms import DATA_KEYS, arm_config
from study.spec.schema import StudySpec
from study.spec.smoke import smoke_spec

ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Train keys that name files or folders: made absolute when the spec is loaded.
PATH_KEYS = (
    "init_weights",
    "init_discriminator_aux",
    "init_discriminator_main",
    "source_root",
    "target_root",
    "source_list",
    "target_list",
)


def _expand(value: Any, path: str, problems: dict[str, dict[str, list[str]]]) -> Any:
    if isinstance(value, dict):
        return {
            k: _expand(v, f"{path}.{k}" if path else str(k), problems) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if isinstance(value, str):

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if not os.environ.get(name):  # unset, or empty: an empty path is the folder "."
                kind = "not set" if name not in os.environ else "empty"
                problems[kind].setdefault(name, []).append(path)
                return match.group(0)
            return os.environ[name]

        return ENV_PATTERN.sub(replace, value)
    return value


def expand_env(value: Any, path: str, origin: str) -> Any:
    """Replace ``${NAME}`` in every string; unset or empty variables are one error naming all
    of them (and where each is used), so a user learns everything needed in one run. It runs
    after ``--set``, so a key set on the command line needs no variable."""
    problems: dict[str, dict[str, list[str]]] = {"not set": {}, "empty": {}}
    out = _expand(value, path, problems)
    parts = []
    for kind, names in problems.items():
        if names:
            listed = ", ".join(f"{name} ({', '.join(paths)})" for name, paths in names.items())
            plural = "s" if len(names) > 1 else ""
            parts.append(f"environment variable{plural} {kind}: {listed}")
    if parts:
        raise SpecError(f"{origin}: {'; '.join(parts)} (export them, or set the keys with --set)")
    return out


def _path_slots(raw: dict[str, Any]) -> list[tuple[dict, str]]:
    """(mapping, key) of every value in a raw spec that names a file or folder."""
    slots = []
    data = raw.get("data")
    if isinstance(data, dict):
        for section in ("source", "target", "synthetic"):
            node = data.get(section)
            if isinstance(node, dict):
                slots += [(node, key) for key in ("root", "list") if key in node]
    arms = raw.get("arms")
    settings = [raw.get("train"), *(arms.values() if isinstance(arms, dict) else [])]
    for node in settings:
        if isinstance(node, dict):
            slots += [(node, key) for key in PATH_KEYS if key in node]
    if "storage" in raw:
        slots.append((raw, "storage"))
    return slots


def _absolute_path(value: Any, base: Path) -> Any:
    """``value`` made absolute against ``base`` when it is a relative local path."""
    if not isinstance(value, str) or not value or "://" in value or "\0" in value:
        return value
    path = Path(value).expanduser()
    return os.path.normpath(path if path.is_absolute() else (base / path).absolute())


def _absolute(raw: dict[str, Any], base: Path) -> None:
    """Make every relative path of a raw spec absolute against ``base``."""
    for node, key in _path_slots(raw):
        node[key] = _absolute_path(node[key], base)


def apply_overrides(raw: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """``--set a.b.c=value`` on the raw YAML mapping (before validation); a relative path given
    this way is relative to the current folder."""
    out = copy.deepcopy(raw)
    for dotted, value in parse_overrides(pairs).items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise SpecError(f"--set {dotted}: `{key}` is not a mapping")
        node[leaf] = value
        if any(n is node and k == leaf for n, k in _path_slots(out)):
            node[leaf] = _absolute_path(value, Path.cwd())
    return out


TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}


def _check_trackers(spec: StudySpec, origin: str) -> None:
    """A tracker the spec asks for needs its package: refused now, naming the extra, rather
    than when the first trial reports."""
    import importlib.util

    asked = {"tensorboard": spec.trackers.tensorboard, "mlflow": spec.trackers.mlflow is not None}
    for tracker, (package, extra) in TRACKER_PACKAGES.items():
        if asked[tracker] and importlib.util.find_spec(package) is None:
            raise SpecError(
                f"{origin}: trackers.{tracker}: the {package} package is not installed; "
                f'pip install -e ".[{extra}]"'
            )


def _validate(spec: StudySpec, origin: str) -> None:
    """What the schema alone cannot see: names in the space and the arms, keys fixed twice,
    train keys that no arm uses, every arm's config, and the trackers' packages."""
    _check_trackers(spec, origin)
    arms = list(spec.arms)
    for name, dist in spec.search.space.items():
        if name not in FIELDS:
            raise SpecError(
                f"{origin}: search.space.{key_name(name)}: not a train key"
                f"{closest_key(name, FIELDS)}"
            )
        for arm in dist.arms or []:
            if arm not in spec.arms:
                raise SpecError(
                    f"{origin}: search.space.{key_name(name)}.arms: unknown arm `{key_name(arm)}`"
                    f"{closest_key(arm, arms)}"
                )
        for arm in arms:
            if dist.applies_to(arm) and name in spec.arms[arm]:
                raise SpecError(
                    f"{origin}: search.space.{key_name(name)}: arm `{key_name(arm)}` fixes it; "
                    f"limit the parameter with `arms:` or remove it from the arm"
                )
    for where, values in [("train", spec.train)] + [
        (f"arms.{key_name(arm)}", values) for arm, values in spec.arms.items()
    ]:
        for key in values:
            if key not in FIELDS:
                raise SpecError(
                    f"{origin}: {where}.{key_name(key)}: unknown key{closest_key(key, FIELDS)}"
                )
            if key in DATA_KEYS:
                raise SpecError(
                    f"{origin}: {where}.{key}: set by the `data` section for every arm; "
                    "set it there"
                )
    for key in spec.train:
        owners = [
            "searched" if key in spec.searched(arm) else "fixed"
            for arm in arms
            if key in spec.searched(arm) or key in spec.arms[arm]
        ]
        if len(owners) == len(arms):
            how = "searched or fixed" if len(set(owners)) > 1 else owners[0]
            raise SpecError(
                f"{origin}: train.{key}: every arm overrides it ({how} in each), so this value "
                "is never used; remove it"
            )
    for index, (first, second) in enumerate(spec.compare or []):
        for name in (first, second):
            if name not in spec.arms:
                raise SpecError(
                    f"{origin}: compare[{index}]: unknown arm `{key_name(name)}`"
                    f"{closest_key(name, arms)}"
                )
        if first == second:
            raise SpecError(
                f"{origin}: compare[{index}]: expected two different arms, got {first} twice"
            )
    for arm in arms:
        sampled = {name: dist.representative() for name, dist in spec.searched(arm).items()}
        try:
            arm_config(spec, arm, sampled)
        except ConfigError as exc:
            message = str(exc).removeprefix(f"arm {arm}: ")
            raise SpecError(f"{origin}: arms.{key_name(arm)} (with train): {message}") from None
        grace, steps = spec.scheduler.grace_period, arm_config(spec, arm).num_steps
        if spec.scheduler.kind == "asha" and grace > steps:
            # Ray Tune's ASHA asserts grace_period <= max_t (the arm's steps) when it starts.
            raise SpecError(
                f"{origin}: scheduler.grace_period: expected at most the steps an arm trains "
                f"(arm {key_name(arm)}: num_steps {steps}), got {grace}"
            )


def load_spec(
    path: str | Path, overrides: list[str] | None = None, smoke: bool = False
) -> StudySpec:
    """Read, expand, override and validate a study YAML completely (no Ray, no data access);
    ``smoke``: the same study at a tiny size (study/spec/smoke.py)."""
    origin = str(path)
    try:
        raw = read_yaml_mapping(path)
    except ConfigError as exc:
        raise SpecError(str(exc)) from None
    if smoke:
        raw = smoke_spec(raw)
    try:
        # --set first (its relative paths against the current folder), then ${VAR} (so a key
        # set on the command line needs no variable), then the spec's own relative paths
        # against the spec's folder.
        raw = apply_overrides(raw, list(overrides or []))
        raw = expand_env(raw, "", origin)
        _absolute(raw, Path(path).absolute().parent)
        spec = StudySpec(**raw)
    except ValidationError as exc:
        key, message = describe(exc.errors(), StudySpec)
        raise SpecError(f"{origin}: {key}: {message}") from None
    except TypeError as exc:  # a key that is not text, at the top level
        raise SpecError(f"{origin}: {exc}") from None
    except RecursionError:
        raise SpecError(f"{origin}: nested too deeply") from None
    except ConfigError as exc:  # a malformed --set
        raise SpecError(str(exc)) from None
    _validate(spec, origin)
    return spec
