"""The trainer's one frozen, typed config.

Every default is the official AdaptSegNet code's (``train_gta2cityscapes_multi.py``); every
deviation from it is an option with a name. Image sizes are written HxW everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from adaptseg.schema import (
    Fraction,
    KeyProblem,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Seed,
    closest_key,
    describe,
    key_name,
)

Size = tuple[int, int]


class ConfigError(ValueError):
    """A bad config: the message is one line naming the file, the key and what was expected."""


def parse_size(value: Any) -> Size:
    """Parse an HxW size given as ``"720x1280"`` or ``[720, 1280]``."""
    if isinstance(value, str):
        parts = value.lower().split("x")
        if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
            value = [int(p) for p in parts]
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"expected a size HxW such as '512x1024' or [512, 1024], got {value!r}")


class TrainConfig(BaseModel):
    """All knobs of one AdaptSegNet run (flat, so study YAMLs and ``--set`` name them directly).

    The defaults are the official code's; ``docs/config.md`` (generated from this class by
    ``python -m adaptseg.reference``) says what each key means."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    # --- data ---------------------------------------------------------------------------
    source: Literal["gta5", "synthia", "cityscapes", "random"] = "gta5"
    source_root: str | None = None
    target: Literal["cityscapes", "random"] = "cityscapes"
    target_root: str | None = None
    source_list: str | None = None
    target_list: str | None = None
    input_size_source: Size = (720, 1280)
    input_size_target: Size = (512, 1024)
    preprocess: Literal["caffe", "torchvision"] = "caffe"
    random_mirror: bool = False
    random_scale: bool = False
    eval_split: Literal["select", "report", "all"] = "select"
    eval_classes: Literal["auto", 19, 13] = "auto"
    eval_limit: PositiveInt | None = None
    num_workers: NonNegativeInt = 4
    # --- model --------------------------------------------------------------------------
    backbone: Literal["resnet101", "resnet50", "small", "vgg16"] = "resnet101"
    num_classes: PositiveInt = 19
    multi_level: bool = True
    aspp_branches: Literal[2, 4] = 2
    bn_mode: Literal["train", "frozen"] = "train"
    align_corners: bool = True
    ndf: PositiveInt = 64
    init_weights: str | None = None
    min_init_match: Fraction = 0.95
    init_discriminator_aux: str | None = None
    init_discriminator_main: str | None = None
    # --- losses -------------------------------------------------------------------------
    use_target: bool = True
    adapt_space: Literal["output", "feature"] = "output"
    gan: Literal["vanilla", "ls"] = "vanilla"
    lambda_seg_aux: NonNegativeFloat = 0.1
    lambda_adv_aux: NonNegativeFloat = 0.0002
    lambda_adv_main: NonNegativeFloat = 0.001
    # --- optimisation -------------------------------------------------------------------
    optimizer: Literal["sgd", "adam"] = "sgd"
    backbone_update: Literal["official", "once"] = "official"
    lr: PositiveFloat = 2.5e-4
    head_lr_mult: PositiveFloat = 10.0
    lr_d: PositiveFloat = 1e-4
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: NonNegativeFloat = 5e-4
    poly_power: NonNegativeFloat = 0.9
    schedule_steps: PositiveInt = 250000
    num_steps: PositiveInt = 150000
    batch_size: PositiveInt = 1
    iter_size: PositiveInt = 1
    # --- run ----------------------------------------------------------------------------
    seed: Seed = 1234
    deterministic: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    optimizer_impl: Literal["default", "foreach", "fused"] = "default"
    cudnn_benchmark: bool = False
    upsample: Literal["interpolate", "separable"] = "interpolate"
    eval_every: PositiveInt = 5000
    checkpoint_every: PositiveInt = 5000
    keep_checkpoints: PositiveInt = 2
    log_every: PositiveInt = 10

    @field_validator("input_size_source", "input_size_target", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Size:
        return parse_size(value)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.num_steps > self.schedule_steps:
            raise KeyProblem(
                "num_steps",
                f"expected num_steps <= schedule_steps ({self.schedule_steps}), "
                f"got {self.num_steps}",
            )
        if self.eval_every > self.num_steps:
            raise KeyProblem(
                "eval_every",
                f"expected eval_every <= num_steps ({self.num_steps}), got {self.eval_every}",
            )
        if self.backbone == "vgg16" and self.multi_level:
            raise KeyProblem(
                "multi_level",
                "expected false with backbone vgg16 (DeepLab-VGG16 has one head), got true",
            )
        if self.eval_classes == 13 and self.num_classes != 19:
            raise KeyProblem(
                "eval_classes",
                f"expected 19 or auto with num_classes {self.num_classes} (the 13-class SYNTHIA "
                "evaluation picks from the 19 Cityscapes classes), got 13",
            )
        if self.init_discriminator_aux is not None and not self.multi_level:
            raise KeyProblem(
                "init_discriminator_aux",
                "expected null with multi_level false (no aux discriminator is built)",
            )
        for kind, root_key in (("source", "source_root"), ("target", "target_root")):
            if getattr(self, kind) != "random" and getattr(self, root_key) is None:
                raise KeyProblem(
                    root_key, f"expected a directory for {kind}={getattr(self, kind)!r}, got null"
                )
        return self

    # --- derived values --------------------------------------------------------------------
    @property
    def evaluation_classes(self) -> int:
        """19 (Cityscapes) or 13 (the SYNTHIA subset): what mIoU averages over."""
        if self.eval_classes == "auto":
            return 13 if self.source == "synthia" else 19
        return int(self.eval_classes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (sizes as 'HxW' strings): YAML, JSON and torch.load safe."""
        out = self.model_dump()
        for key in ("input_size_source", "input_size_target"):
            out[key] = f"{out[key][0]}x{out[key][1]}"
        return out


FIELDS: tuple[str, ...] = tuple(TrainConfig.model_fields)


def build_config(values: Mapping[str, Any], origin: str = "<config>") -> TrainConfig:
    """Validate a mapping into a TrainConfig, raising ConfigError with a one-line message."""
    unknown = [k for k in values if k not in FIELDS]
    if unknown:
        key = unknown[0]
        raise ConfigError(f"{origin}: unknown key `{key_name(key)}`{closest_key(key, FIELDS)}")
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        key, message = describe(exc.errors(), TrainConfig)
        raise ConfigError(f"{origin}: key `{key}`: {message}") from None


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """Turn ``["lr=1e-3", "multi_level=false"]`` into typed values (YAML scalars)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {pair!r}: the value is not a valid YAML scalar") from None
    return out


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (safe loader), with one-line errors."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a YAML file (byte {exc.start} is not UTF-8 text)"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> TrainConfig:
    """Defaults, then the YAML file, then ``--set key=value`` overrides."""
    values: dict[str, Any] = read_yaml_mapping(path) if path is not None else {}
    values.update(parse_overrides(overrides))
    return build_config(values, origin=str(path) if path is not None else "--set")


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ between two config dicts."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
