"""``python -m adaptseg.train --config FILE [--set key=value ...] --out DIR``: one run, no Ray.

Writes ``DIR/config.yaml`` (the resolved config), ``DIR/metrics.jsonl`` (training losses every
``log_every`` steps, evaluations every ``eval_every``) and ``DIR/checkpoints/step_<N>.pt``.
Running the same command on the same DIR resumes from the newest readable checkpoint.
Exit codes: 0 done, 1 the run diverged, 2 bad input, 130 interrupted (a checkpoint was saved).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from adaptseg.config import ConfigError, TrainConfig, changed_keys, load_config
from adaptseg.data.errors import DataError
from adaptseg.fileio import atomic_write_text
from adaptseg.interrupts import DeferredInterrupts, StopRequested

if TYPE_CHECKING:
    from adaptseg.data.build import RunData
# torch and the trainer are imported where they are used, so that --help answers at once.

log = logging.getLogger("adaptseg.train")
# Keys a resumed run may change: they steer the loop, not the training maths.
RESUMABLE_CHANGES = frozenset(
    {"num_steps", "eval_every", "checkpoint_every", "keep_checkpoints", "log_every", "num_workers"}
)
EXIT_DIVERGED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m adaptseg.train", description=__doc__)
    parser.add_argument("--config", help="YAML of config keys (defaults: the official code's)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key (repeatable), e.g. --set lambda_adv_main=0.002",
    )
    parser.add_argument("--out", required=True, help="run directory (resumed if it exists)")
    return parser


def _check_same_run(cfg: TrainConfig, out: Path) -> None:
    saved = out / "config.yaml"
    if not saved.exists():
        return
    old = yaml.safe_load(saved.read_text()) or {}
    changed = [k for k in changed_keys(old, cfg.to_dict()) if k not in RESUMABLE_CHANGES]
    if changed:
        raise ConfigError(
            f"{saved}: this run directory was started with other values for "
            f"{', '.join(changed)}; use a new --out or the original config"
        )


def _trim_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint being resumed (they will be redone)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


class MetricsLog:
    """Append-only JSON lines, one record per log interval or evaluation."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def run(cfg: TrainConfig, out: Path, data: RunData | None = None) -> Iterator[dict[str, Any]]:
    """Train (resuming from ``out``) and yield every record written to the metrics log."""
    from tqdm import tqdm

    from adaptseg import loop
    from adaptseg.checkpoint import CheckpointError, load_latest, save_checkpoint
    from adaptseg.data.build import build_datasets
    from adaptseg.loop import Ended, Evaluated, Logged
    from adaptseg.trainer import Trainer

    data = data if data is not None else build_datasets(cfg)
    trainer = Trainer(cfg, data.source, data.target, data.eval_sets)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = out / "checkpoints"
    resumed = load_latest(checkpoints)
    if resumed is not None:
        try:
            trainer.load_state_dict(resumed[0])
        except CheckpointError as exc:
            raise CheckpointError(f"{resumed[1]}: {exc}") from None
        if trainer.step_count >= cfg.num_steps:
            # Finished (maybe further than asked, after a larger --set num_steps): say so, and
            # leave config.yaml saying what was trained.
            print(
                f"already trained: {resumed[1].name} is at step {trainer.step_count} "
                f"(num_steps {cfg.num_steps}); nothing to do",
                file=sys.stderr,
            )
            return
        log.info("resumed from %s at step %d", resumed[1], trainer.step_count)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=True))
    metrics = MetricsLog(out / "metrics.jsonl")
    _trim_log(metrics.path, trainer.step_count)
    bar = tqdm(total=cfg.num_steps, initial=trainer.step_count, unit="it", dynamic_ncols=True)
    with DeferredInterrupts("saving a checkpoint after the current step") as interrupts:
        try:
            for event in loop.events(trainer, cfg.log_every, cfg.eval_every, cfg.eval_split):
                if isinstance(event, Ended):
                    raise event.error
                if isinstance(event, Logged):
                    record = {
                        "step": event.step,
                        "kind": "train",
                        **event.losses,
                        "compute_seconds": event.compute_seconds,
                    }
                    bar.set_postfix(
                        {k.removeprefix("loss_"): f"{v:.3f}" for k, v in event.losses.items()},
                        refresh=False,
                    )
                elif isinstance(event, Evaluated):
                    record = {
                        "step": event.step,
                        "kind": "eval",
                        "split": event.split,
                        **event.metrics,
                    }
                    bar.write(f"step {event.step}: {event.split} miou {record['miou']:.4f}")
                else:
                    saved = event.step % cfg.checkpoint_every == 0 or event.last
                    if saved or (interrupts.requested is not None and not event.last):
                        save_checkpoint(trainer.state_dict(), checkpoints, cfg.keep_checkpoints)
                    bar.update(1)
                    if not event.last:
                        interrupts.check()
                    continue
                metrics.write(record)
                yield record
        finally:
            bar.close()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from adaptseg.checkpoint import CheckpointError
    from adaptseg.data.build import build_datasets
    from adaptseg.models import InitWeightsError
    from adaptseg.trainer import NonFiniteLossError

    out = Path(args.out)
    try:
        cfg = load_config(args.config, args.overrides)
        _check_same_run(cfg, out)
        data = build_datasets(cfg)  # every input is checked before anything is written
        for _ in run(cfg, out, data):
            pass
    except (ConfigError, InitWeightsError, CheckpointError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as exc:
        print(f"diverged: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except StopRequested:
        command = " ".join(["python -m adaptseg.train", *sys.argv[1:]])
        print(f"interrupted; a checkpoint was saved. Resume with: {command}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        command = " ".join(["python -m adaptseg.train", *sys.argv[1:]])
        print(
            f"interrupted inside a step: no checkpoint was saved for it; the last periodic one "
            f"is kept. Resume with: {command}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print(f"done: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
