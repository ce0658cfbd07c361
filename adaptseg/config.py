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
    ``python -m study.reference``) says what each key means."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        use_attribute_docstrings=True,
    )

    # --- data ---------------------------------------------------------------------------
    source: Literal["gta5", "synthia", "cityscapes", "random"] = "gta5"
    """Source data set: `gta5`, `synthia`, `cityscapes` (its train labels: the oracle) or `random`
    (built-in random scenes, for smoke runs)."""
    source_root: str | None = None
    """Source data set root (required unless `random`)."""
    target: Literal["cityscapes", "random"] = "cityscapes"
    """Target data set: `cityscapes` or `random`."""
    target_root: str | None = None
    """Cityscapes root (`leftImg8bit/`, `gtFine/`), required unless `random`."""
    source_list: str | None = None
    """Optional list of source image names, as the official `gta5_list/train.txt`."""
    target_list: str | None = None
    """Optional list of target image names (relative to `leftImg8bit/train`)."""
    input_size_source: Size = (720, 1280)
    """Source resize, HxW (official `--input-size 1280,720`)."""
    input_size_target: Size = (512, 1024)
    """Target and evaluation resize, HxW (official `--input-size-target 1024,512`)."""
    preprocess: Literal["caffe", "torchvision"] = "caffe"
    """`caffe`: BGR minus the DeepLab mean on the 0-255 scale (official); `torchvision`: RGB in
    [0, 1], ImageNet mean and std."""
    random_mirror: bool = False
    """Random horizontal flips (the official flag is a no-op)."""
    random_scale: bool = False
    """Random scale 0.5-1.5 and crop (the official flag is a no-op)."""
    eval_split: Literal["select", "report", "all"] = "select"
    """Evaluation split during training: `select` (what a study optimises), `report` or `all`
    (SHA-1 halves of Cityscapes val)."""
    eval_classes: Literal["auto", 19, 16, 13] = "auto"
    """The classes mIoU averages over (what search, ASHA and the confirm stage use): 19, or
    SYNTHIA's 16 (less terrain, truck, train) or 13 (also less wall, fence, pole); `auto`: 13
    when `source: synthia` (the AdaptSegNet paper's table). 16 and 13 need `num_classes: 19`.
    Every class's IoU is recorded whatever the choice."""
    eval_limit: PositiveInt | None = None
    """Evaluate on the first N images only (null: all)."""
    eval_batch_size: PositiveInt = 1
    """Images per evaluation forward (official: 1). BatchNorm evaluates in eval mode, so any
    size gives the same confusion matrix; more is faster where the split's images and labels
    share one size (Cityscapes val does)."""
    num_workers: NonNegativeInt = 4
    """Data loader worker processes."""
    # --- model --------------------------------------------------------------------------
    backbone: Literal["resnet101", "resnet50", "small", "vgg16"] = "resnet101"
    """`resnet101` (DeepLab-v2, the paper's), `resnet50`, `small` (CPU preset) or `vgg16`
    (DeepLab-v2 VGG-16, single level)."""
    num_classes: PositiveInt = 19
    """Output classes (19 for Cityscapes)."""
    multi_level: bool = True
    """Aux head on conv4 and its discriminator; false builds and runs neither (the official code
    computes them with zero weight)."""
    aspp_branches: Literal[2, 4] = 2
    """ASPP branches summed: 2 is the official forward (it returns after two), 4 the paper."""
    bn_mode: Literal["train", "frozen"] = "train"
    """`train`: official (batch statistics, running statistics updated, affine frozen); `frozen`:
    BatchNorm in eval mode."""
    align_corners: bool = True
    """Bilinear upsampling of logits with align_corners (the official `pytorch_0.4` value)."""
    ndf: PositiveInt = 64
    """Discriminator width (channels of its first convolution)."""
    init_weights: str | None = None
    """Local init file: the DeepLab-v2 init (`Scale.` keys), a torchvision ResNet or VGG-16 state
    dict, or an official G snapshot (its heads load too)."""
    min_init_match: Fraction = 0.95
    """Fail when fewer than this fraction of backbone tensors matched the init file."""
    init_discriminator_aux: str | None = None
    """Aux-level D weights to start from: an official `*_D1.pth` snapshot or this project's
    layout."""
    init_discriminator_main: str | None = None
    """Main-level D weights to start from: an official `*_D2.pth` snapshot or this project's
    layout."""
    # --- losses -------------------------------------------------------------------------
    use_target: bool = True
    """False: source-only, target images never pass through G."""
    adapt_space: Literal["output", "feature", "entropy"] = "output"
    """`output`: D sees the softmax of the upsampled logits (the paper's method); `feature`: the
    features each head reads (the paper's feature-level baseline); `entropy`: the weighted
    self-information map of that softmax (ADVENT's AdvEnt, Vu et al. 2019)."""
    gan: Literal["vanilla", "ls"] = "vanilla"
    """`vanilla` (BCE with logits) or `ls` (LS-GAN) (official `--gan`)."""
    lambda_seg_aux: NonNegativeFloat = 0.1
    """Aux-head CE weight (official `--lambda-seg`)."""
    lambda_adv_aux: NonNegativeFloat = 0.0002
    """Aux adversarial weight (official `--lambda-adv-target1`)."""
    lambda_adv_main: NonNegativeFloat = 0.001
    """Main adversarial weight (official `--lambda-adv-target2`)."""
    lambda_ent_main: NonNegativeFloat = 0.0
    """Weight of the target's entropy loss on the main head (ADVENT's MinEnt; its code uses
    1e-3); 0: none. With every `lambda_adv` 0 no discriminator is built (ADVENT's
    `train_minent`)."""
    lambda_ent_aux: NonNegativeFloat = 0.0
    """Weight of the target's entropy loss on the aux head (ADVENT's MinEnt: 2e-4); needs
    `multi_level`."""
    # --- optimisation -------------------------------------------------------------------
    optimizer: Literal["sgd", "adam"] = "sgd"
    """G optimiser: `sgd` (official) or `adam` (for small nets trained from scratch)."""
    backbone_update: Literal["official", "once"] = "official"
    """`official`: the official SGD update, which visits most backbone tensors three or four times
    per step (docs/fidelity.md); `once`: each tensor once (the fix). No effect with Adam or
    VGG-16."""
    lr: PositiveFloat = 2.5e-4
    """G learning rate (official `--learning-rate`)."""
    head_lr_mult: PositiveFloat = 10.0
    """Learning-rate multiplier of the ASPP heads (official 10; VGG-16's official optimiser uses
    1)."""
    lr_d: PositiveFloat = 1e-4
    """Discriminators' Adam learning rate, betas (0.9, 0.99) (official `--learning-rate-D`)."""
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    """SGD momentum."""
    weight_decay: NonNegativeFloat = 5e-4
    """Weight decay on every G group, biases included (the code's 5e-4, not the paper's 1e-4)."""
    poly_power: NonNegativeFloat = 0.9
    """Poly schedule: `lr * (1 - step / schedule_steps) ** poly_power`."""
    schedule_steps: PositiveInt = 250000
    """Learning-rate schedule horizon (official `--num-steps`)."""
    num_steps: PositiveInt = 150000
    """Where training stops (official `--num-steps-stop`)."""
    batch_size: PositiveInt = 1
    """Images per stream per pass."""
    iter_size: PositiveInt = 1
    """Passes accumulated per step."""
    # --- run ----------------------------------------------------------------------------
    seed: Seed = 1234
    """Seeds python, numpy, torch and the data order (the official code never seeds)."""
    deterministic: bool = False
    """Deterministic kernels (cuDNN, `torch.use_deterministic_algorithms`)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto` (CUDA when present), `cpu` or `cuda`."""
    amp: Literal["none", "bf16", "fp16", "auto"] = "none"
    """`bf16` or `fp16` autocast (fp16 with a gradient scaler); `none` is fp32; `auto` decides on
    the machine that trains: bf16 where the device computes it natively (CUDA sm_80+, a CPU with
    AVX-512 BF16 or AMX), fp16 on older CUDA cards, fp32 elsewhere (an AVX2 CPU emulates bf16
    and is 9-17x slower with it)."""
    channels_last: bool = False
    """Channels-last memory format."""
    optimizer_impl: Literal["default", "foreach", "fused"] = "default"
    """`default` (PyTorch's choice), `foreach` or `fused` optimiser kernels: the same update."""
    cudnn_benchmark: bool = False
    """Let cuDNN pick the fastest convolution kernels for the fixed sizes (ignored with
    `deterministic`)."""
    upsample: Literal["interpolate", "separable"] = "interpolate"
    """`interpolate`: `F.interpolate` (official); `separable`: the same bilinear interpolation as
    two matrix products (fast, deterministic on CUDA)."""
    eval_every: PositiveInt = 5000
    """Evaluation period in steps (official `--save-pred-every`)."""
    checkpoint_every: PositiveInt = 5000
    """Checkpoint period in steps (`adaptseg.train`)."""
    keep_checkpoints: PositiveInt = 2
    """How many checkpoints `adaptseg.train` keeps."""
    log_every: PositiveInt = 10
    """Metrics-log period in steps."""

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
        if self.eval_classes in (16, 13) and self.num_classes != 19:
            raise KeyProblem(
                "eval_classes",
                f"expected 19 or auto with num_classes {self.num_classes} (the SYNTHIA subsets "
                f"pick from the 19 Cityscapes classes), got {self.eval_classes}",
            )
        for key in ("lambda_ent_main", "lambda_ent_aux"):
            if getattr(self, key) > 0 and not self.use_target:
                raise KeyProblem(
                    key, "expected 0 with use_target false (the entropy loss is the target's)"
                )
        if self.lambda_ent_aux > 0 and not self.multi_level:
            raise KeyProblem(
                "lambda_ent_aux", "expected 0 with multi_level false (no aux head is built)"
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

    @property
    def adversarial_levels(self) -> tuple[str, ...]:
        """The levels whose discriminator G is trained against (a positive ``lambda_adv``)."""
        weights = {"aux": self.lambda_adv_aux if self.multi_level else 0.0,
                   "main": self.lambda_adv_main}  # fmt: skip
        return tuple(level for level, weight in weights.items() if weight > 0)

    @property
    def builds_discriminators(self) -> bool:
        """Whether D is built: unless the run is MinEnt alone (every ``lambda_adv`` 0 and an
        entropy loss, as ADVENT's ``train_minent``). The BatchNorm control (every weight 0)
        keeps the official code's unopposed D; source-only builds D and never steps it."""
        minent = not self.adversarial_levels and (self.lambda_ent_main or self.lambda_ent_aux)
        return not minent

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
