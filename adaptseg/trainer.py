"""The AdaptSegNet iteration, evaluation and complete training state (no Ray here)."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from adaptseg.checkpoint import CHECKPOINT_FORMAT, CheckpointError, rng_state, set_rng_state
from adaptseg.config import TrainConfig
from adaptseg.data.stream import (
    InfiniteStream,
    ignore_interrupts,
    loader_generator,
    shut_down_workers,
    worker_batches,
)
from adaptseg.devices import detect as detect_device
from adaptseg.devices import resolve_amp
from adaptseg.evaluation import ConfusionMatrix, metrics_from_confusion
from adaptseg.losses import (
    SOURCE_LABEL,
    TARGET_LABEL,
    adv_loss,
    entropy_loss,
    entropy_map,
    seg_loss,
)
from adaptseg.models import (
    FCDiscriminator,
    build_generator,
    load_discriminator_weights,
    load_init_weights,
)
from adaptseg.models.discriminator import enlarge_to_min_size
from adaptseg.optim import build_d_optimizer, build_g_optimizer, set_poly_lr
from adaptseg.upsample import separable_bilinear

LEVELS = ("aux", "main")
LEVELS_BUILT_FIRST = ("main", "aux")  # D_main is created (and drawn from the RNG) first


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; carries the step and every loss of that step."""

    def __init__(self, step: int, losses: Mapping[str, float]) -> None:
        shown = ", ".join(f"{k}={v:.6g}" for k, v in losses.items())
        super().__init__(f"loss became NaN or infinite at step {step}: {shown}")
        self.step, self.losses = step, dict(losses)


def set_requires_grad(modules: Iterable[nn.Module], flag: bool) -> None:
    """Freeze or unfreeze every parameter of ``modules``."""
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad_(flag)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for but torch sees no CUDA device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _first(batch: Any) -> Tensor:
    return batch[0] if isinstance(batch, list | tuple) else batch


class Trainer:
    """One AdaptSegNet run: ``step()``, ``evaluate()``, ``state_dict()``, ``load_state_dict()``.

    One ``step()`` is the official iteration (docs/fidelity.md, "the iteration"), repeated
    ``iter_size`` times with gradients accumulated:

    1. D frozen; source forward, CE on main + ``lambda_seg_aux`` x aux (ignore 255), backward;
    2. target forward; D(softmax) against the *source* label, weighted by ``lambda_adv_aux`` and
       ``lambda_adv_main``, backward into G through the frozen D;
    3. D unfrozen; D on detached source softmax (label 0) and target softmax (label 1), each
       loss halved, backward;

    then G, D_aux and D_main step once each, after the poly LR for this step was set. With
    ``adapt_space: feature`` D sees the feature maps the heads read instead of the softmax
    (the paper's feature-level baseline), and with ``adapt_space: entropy`` the weighted
    self-information map of the softmax (ADVENT's AdvEnt); ``lambda_ent_main`` and
    ``lambda_ent_aux`` add the target's entropy to phase 2 (ADVENT's MinEnt, which with every
    ``lambda_adv`` at 0 builds and steps no discriminator); everything else is the same.

    Args:
        cfg: the run's config.
        source: yields (image, label) pairs.
        target: yields images (or tuples whose first item is the image); unused when
            ``cfg.use_target`` is False.
        eval_sets: named evaluation datasets of (image, label) pairs, e.g. ``{"select": ..}``.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        source: Dataset,
        target: Dataset | None = None,
        eval_sets: Mapping[str, Dataset] | None = None,
    ) -> None:
        if cfg.use_target and target is None:
            raise ValueError("use_target is true but no target dataset was given")
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        # `amp: auto` is decided here, where the trainer runs (adaptseg/devices.py).
        self.capabilities = detect_device(self.device)
        self.amp = resolve_amp(cfg.amp, self.capabilities)
        seed_everything(cfg.seed, cfg.deterministic)
        if cfg.cudnn_benchmark and not cfg.deterministic:
            torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest kernels
        self.model = build_generator(
            cfg.num_classes, cfg.backbone, cfg.multi_level, cfg.aspp_branches, cfg.bn_mode
        )
        if cfg.init_weights is not None:
            load_init_weights(self.model, cfg.init_weights, cfg.min_init_match)
        # The levels G has heads for, in the order their losses are taken (aux, then main).
        self.levels = tuple(level for level in LEVELS if level == "main" or cfg.multi_level)
        # MinEnt alone trains no discriminator (ADVENT's train_minent): none is built.
        d_levels = self.levels if cfg.builds_discriminators else ()
        built = {
            level: FCDiscriminator(self._d_channels(level), cfg.ndf)
            for level in sorted(d_levels, key=LEVELS_BUILT_FIRST.index)
        }
        self.discriminators = {level: built[level] for level in d_levels}
        for level, discriminator in self.discriminators.items():
            path = getattr(cfg, f"init_discriminator_{level}")
            if path is not None:
                load_discriminator_weights(discriminator, path)
        memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
        for module in (self.model, *self.discriminators.values()):
            module.to(self.device, memory_format=memory_format)
        self.model.train()
        self.optimizer_g = build_g_optimizer(cfg, self.model)
        self.optimizers_d = {
            level: build_d_optimizer(cfg, discriminator)
            for level, discriminator in self.discriminators.items()
        }
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        pin = self.device.type == "cuda"
        self.source_stream = InfiniteStream(
            source, cfg.batch_size, cfg.seed, cfg.num_workers, pin_memory=pin
        )
        self.target_stream = (
            InfiniteStream(target, cfg.batch_size, cfg.seed + 1, cfg.num_workers, pin_memory=pin)
            if cfg.use_target and target is not None
            else None
        )
        self.eval_sets = dict(eval_sets or {})
        self.step_count = 0
        self.compute_seconds = 0.0  # training and evaluation
        self.train_seconds = 0.0  # training steps only (for throughput)

    # ----------------------------------------------------------------------------------------
    def _d_channels(self, level: str) -> int:
        if self.cfg.adapt_space == "feature":
            return self.model.feature_channels[level]
        return self.cfg.num_classes

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _to_device(self, tensor: Tensor, image: bool) -> Tensor:
        tensor = tensor.to(self.device, non_blocking=True)
        if image and self.cfg.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def _segment(self, images: Tensor, size: tuple[int, int]) -> dict[str, Tensor]:
        """G forward, logits upsampled (bilinear) to ``size``: {"aux": .., "main": ..}; with
        feature-level adaptation also the maps the heads read, {"features_aux": .., ..}."""
        features: dict[str, Tensor] = {}
        with self._autocast():
            if self.cfg.adapt_space == "feature":
                *outputs, features = self.model(images, return_features=True)
            else:
                outputs = self.model(images)
        logits = dict(zip(LEVELS, outputs, strict=True))
        out = {
            level: self._upsample(value, size)
            for level, value in logits.items()
            if value is not None
        }
        out.update({f"features_{level}": features[level] for level in out if level in features})
        return out

    def _upsample(self, logits: Tensor, size: tuple[int, int]) -> Tensor:
        """Logits to the label (or input) size, bilinear: the official ``F.interpolate``, or
        the same interpolation as two matrix products (``upsample: separable``)."""
        if self.cfg.upsample == "separable":
            return separable_bilinear(logits, size, self.cfg.align_corners)
        return F.interpolate(
            logits, size=size, mode="bilinear", align_corners=self.cfg.align_corners
        )

    def _discriminate(self, level: str, prediction: dict[str, Tensor], detach: bool) -> Tensor:
        """D's logits for one level: on the softmax of the upsampled output (the paper's output
        space) or on the features the head reads (``adapt_space: feature``)."""
        discriminator = self.discriminators[level]
        feature = self.cfg.adapt_space == "feature"
        seen = prediction[f"features_{level}" if feature else level]
        seen = seen.detach() if detach else seen
        with self._autocast():
            seen = seen if feature else F.softmax(seen, dim=1)
            if self.cfg.adapt_space == "entropy":
                seen = entropy_map(seen)  # AdvEnt: D sees the weighted self-information
            return discriminator(enlarge_to_min_size(seen, self.cfg.align_corners))

    def _backward(self, loss: Tensor) -> None:
        self.scaler.scale(loss / self.cfg.iter_size).backward()

    def _train_on_source(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Train G on source: CE of the main head plus ``lambda_seg_aux`` x CE of the aux head
        (labels 255 ignored), backward. Returns the upsampled predictions and the losses."""
        images, labels = next(self.source_stream)
        images = self._to_device(images, image=True)
        labels = self._to_device(labels.long(), image=False)
        prediction = self._segment(images, tuple(labels.shape[-2:]))
        losses = {"loss_seg_src_main": seg_loss(prediction["main"], labels)}
        total = losses["loss_seg_src_main"]
        if "aux" in prediction:
            losses["loss_seg_src_aux"] = seg_loss(prediction["aux"], labels)
            total = total + self.cfg.lambda_seg_aux * losses["loss_seg_src_aux"]
        self._backward(total)
        return prediction, losses

    def _fool_discriminators(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """G's target phase: each level's (frozen) D on the target prediction, against the
        *source* label, weighted by its ``lambda_adv``, plus each head's entropy weighted by its
        ``lambda_ent`` (MinEnt); backward into G only."""
        images = self._to_device(_first(next(self.target_stream)), image=True)
        cfg = self.cfg
        weights = {"aux": cfg.lambda_adv_aux, "main": cfg.lambda_adv_main}
        entropy = {"aux": cfg.lambda_ent_aux, "main": cfg.lambda_ent_main}
        trains_g = any(weights[level] > 0 or entropy[level] > 0 for level in self.levels)
        # With every weight at 0 (the bn_control arm) the target pass only moves BatchNorm
        # statistics and feeds D, so it needs no graph.
        losses = {}
        with torch.set_grad_enabled(trains_g):
            prediction = self._segment(images, tuple(images.shape[-2:]))
            total = prediction["main"].new_zeros(())
            for level in self.levels:
                if level in self.discriminators:
                    d_logits = self._discriminate(level, prediction, detach=False)
                    loss = adv_loss(d_logits, SOURCE_LABEL, cfg.gan)
                    losses[f"loss_adv_trg_{level}"] = loss
                    total = total + weights[level] * loss
                if entropy[level] > 0:
                    with self._autocast():
                        prob = F.softmax(prediction[level], dim=1)
                    losses[f"loss_ent_trg_{level}"] = entropy_loss(prob.float())
                    total = total + entropy[level] * losses[f"loss_ent_trg_{level}"]
        if trains_g:
            self._backward(total)
        return prediction, losses

    def _train_discriminators(
        self, source: dict[str, Tensor], target: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Train each level's D on the detached predictions: source = 0, target = 1, each loss
        halved, backward."""
        losses = {}
        for level in self.discriminators:
            on_source = adv_loss(
                self._discriminate(level, source, True), SOURCE_LABEL, self.cfg.gan
            )
            self._backward(on_source / 2)
            on_target = adv_loss(
                self._discriminate(level, target, True), TARGET_LABEL, self.cfg.gan
            )
            self._backward(on_target / 2)
            losses[f"loss_d_{level}"] = (on_source + on_target) / 2
        return losses

    def _accumulate_one_pass(self) -> dict[str, Tensor]:
        """The body of the official iteration, once (``iter_size`` passes make one step)."""
        discriminators = list(self.discriminators.values())
        set_requires_grad(discriminators, False)
        prediction_source, losses = self._train_on_source()
        if self.target_stream is None:
            set_requires_grad(discriminators, True)
            return losses
        prediction_target, adversarial = self._fool_discriminators()
        set_requires_grad(discriminators, True)
        losses.update(adversarial)
        losses.update(self._train_discriminators(prediction_source, prediction_target))
        return losses

    def step(self) -> dict[str, float]:
        """Run one training iteration; returns its mean losses and learning rates.

        Raises:
            NonFiniteLossError: a loss was NaN or infinite (no optimiser stepped).
        """
        start = time.perf_counter()
        optimizers_d = list(self.optimizers_d.values())
        lr_g, lr_d = set_poly_lr(self.cfg, self.step_count, self.optimizer_g, optimizers_d)
        for optimizer in (self.optimizer_g, *optimizers_d):
            optimizer.zero_grad(set_to_none=True)
        positions = self._stream_positions()
        sums: dict[str, Tensor] = {}
        try:
            for _ in range(self.cfg.iter_size):
                for key, value in self._accumulate_one_pass().items():
                    sums[key] = sums.get(key, 0.0) + value.detach() / self.cfg.iter_size
        except BaseException:
            # An interrupted step must not have consumed data: a checkpoint taken now resumes
            # exactly at the start of this step.
            self._restore_stream_positions(positions)
            raise
        values = torch.stack([v.float() for v in sums.values()]).tolist()
        losses = dict(zip(sums, values, strict=True))
        if not all(math.isfinite(v) for v in values):
            raise NonFiniteLossError(self.step_count, losses)
        self.scaler.step(self.optimizer_g)
        if self.target_stream is not None:
            for optimizer in optimizers_d:
                self.scaler.step(optimizer)
        self.scaler.update()
        self.step_count += 1
        elapsed = time.perf_counter() - start
        self.compute_seconds += elapsed
        self.train_seconds += elapsed
        return {**losses, "lr": lr_g, "lr_d": lr_d}

    def _stream_positions(self) -> dict[str, Any]:
        return {
            "source": self.source_stream.state_dict(),
            "target": self.target_stream.state_dict() if self.target_stream else None,
        }

    def _restore_stream_positions(self, positions: Mapping[str, Any]) -> None:
        self.source_stream.load_state_dict(positions["source"])
        if self.target_stream is not None and positions["target"] is not None:
            self.target_stream.load_state_dict(positions["target"])

    # ----------------------------------------------------------------------------------------
    def evaluate(self, split: str | None = None, limit: int | None = None) -> dict[str, float]:
        """mIoU and per-class IoU of the main head over a whole evaluation split.

        Logits are upsampled to each label's own size (the official protocol compares at the
        label resolution) and one confusion matrix is accumulated over the split.
        """
        start = time.perf_counter()
        split = split or self.cfg.eval_split
        if split not in self.eval_sets:
            raise KeyError(f"no evaluation set named {split!r} (have {sorted(self.eval_sets)})")
        dataset = self.eval_sets[split]
        limit = limit if limit is not None else self.cfg.eval_limit
        if limit is not None and limit < len(dataset):  # type: ignore[arg-type]
            dataset = torch.utils.data.Subset(dataset, range(limit))
        workers = self.cfg.num_workers
        loader = DataLoader(
            dataset,
            batch_size=self.cfg.eval_batch_size,
            num_workers=workers,
            worker_init_fn=ignore_interrupts if workers else None,
            generator=loader_generator(self.cfg.seed),
        )
        confusion = ConfusionMatrix(self.cfg.num_classes, self.device)
        self.model.eval()
        batches = worker_batches(loader)
        try:
            with torch.inference_mode():
                for images, labels in batches:
                    labels = self._to_device(labels.long(), image=False)
                    with self._autocast():  # the main head only: the aux one is not scored
                        main = self.model(self._to_device(images, True))[1]
                    logits = self._upsample(main, tuple(labels.shape[-2:]))
                    confusion.update(labels, logits.argmax(1))
        finally:
            shut_down_workers(batches)
            self.model.train()
        self.compute_seconds += time.perf_counter() - start
        return metrics_from_confusion(confusion, self.cfg.evaluation_classes)

    # ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit for bit: tensors and plain values only."""
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step_count,
            "compute_seconds": self.compute_seconds,
            "train_seconds": self.train_seconds,
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "discriminators": {level: d.state_dict() for level, d in self.discriminators.items()},
            "optimizer_g": self.optimizer_g.state_dict(),
            "optimizers_d": {level: o.state_dict() for level, o in self.optimizers_d.items()},
            "scaler": self.scaler.state_dict(),
            "streams": self._stream_positions(),
            "rng": rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (a ``state_dict()``, e.g. read by ``checkpoint.load_state``).

        Raises:
            CheckpointError: the state does not fit this run (other model or optimisers).
        """
        try:
            self._load(state)
        except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"the checkpoint does not fit this run ({first[:300]})"
            ) from None

    def _load(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        for level, discriminator in self.discriminators.items():
            discriminator.load_state_dict(state["discriminators"][level])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        for level, optimizer in self.optimizers_d.items():
            optimizer.load_state_dict(state["optimizers_d"][level])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self._restore_stream_positions(state["streams"])
        set_rng_state(state["rng"])
        self.step_count = int(state["step"])
        self.compute_seconds = float(state["compute_seconds"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
