"""Endless, seeded training streams whose position a checkpoint can save and restore."""

from __future__ import annotations

import atexit
import multiprocessing.util  # noqa: F401  (its exit handler must be registered before ours)
import signal
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def sample_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The random generator of one sample draw: the same wherever and whenever it is loaded."""
    return np.random.default_rng([seed, epoch, position])


def ignore_interrupts(worker_id: int) -> None:
    """Loader workers leave Ctrl-C to the training process, which stops between steps (a
    terminal sends SIGINT to every process of the group; a worker that died of it would break
    the step the trainer is finishing). Such a worker outlives multiprocessing's SIGTERM at
    exit, so every iterator that starts workers is registered with ``worker_batches`` and shut
    down through its queues (``shut_down_workers``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


_LIVE_ITERATORS: weakref.WeakSet = weakref.WeakSet()


def worker_batches(loader: Iterable[Any]) -> Iterator[Any]:
    """``iter(loader)``, remembered so that its workers are shut down at the latest at exit."""
    batches = iter(loader)
    if hasattr(batches, "_shutdown_workers"):
        _LIVE_ITERATORS.add(batches)
    return batches


def shut_down_workers(batches: Iterator[Any] | None) -> None:
    """Stop an iterator's loader workers now (they ignore SIGTERM: see ``ignore_interrupts``),
    instead of whenever the garbage collector reaches it; a no-op without workers."""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
        _LIVE_ITERATORS.discard(batches)


@atexit.register
def _shut_down_all_workers() -> None:
    # Runs before multiprocessing's own exit handler (registered earlier, run later), which
    # would otherwise wait for ever on workers that ignore its SIGTERM: an iterator kept alive
    # by a traceback (an error raised from a worker) is never collected before exit.
    for batches in list(_LIVE_ITERATORS):
        shut_down_workers(batches)


def loader_generator(seed: int, epoch: int = 0) -> torch.Generator:
    """A DataLoader's own generator: starting an iterator draws its workers' base seed from it,
    which would otherwise consume the global torch RNG (and differ after a resume)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch + 1)


class _SeededView(Dataset):
    """Hands each item the generator of its draw (for augmentation) when the dataset wants it."""

    def __init__(self, dataset: Dataset, seed: int, epoch: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, draw: tuple[int, int]) -> Any:
        index, position = draw
        load = getattr(self.dataset, "load", None)
        if load is not None:
            return load(index, sample_rng(self.seed, self.epoch, position))
        return self.dataset[index]


class _Draws(Sampler):
    def __init__(self, order: list[int], start: int) -> None:
        self.order, self.start = order, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position in range(self.start, len(self.order)):
            yield self.order[position], position

    def __len__(self) -> int:
        return len(self.order) - self.start


class InfiniteStream:
    """Batches from ``dataset`` forever, reshuffled each epoch from ``(seed, epoch)``.

    The position is (epoch, samples consumed in it), counted at the consumer, so loader
    workers that prefetched ahead never shift it. A partial last batch of an epoch is kept, as
    the official loader does.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError("the training stream's dataset is empty")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.epoch, self.consumed = 0, 0
        self._batches: Iterator[Any] | None = None

    def _order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.dataset), generator=generator).tolist()  # type: ignore[arg-type]

    def _start(self) -> Iterator[Any]:
        loader = DataLoader(
            _SeededView(self.dataset, self.seed, self.epoch),
            batch_size=self.batch_size,
            sampler=_Draws(self._order(), self.consumed),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            worker_init_fn=ignore_interrupts if self.num_workers else None,
            generator=loader_generator(self.seed, self.epoch),
        )
        return worker_batches(loader)

    def __iter__(self) -> InfiniteStream:
        return self

    def __next__(self) -> Any:
        if self._batches is None:
            self._batches = self._start()
        try:
            try:
                batch = next(self._batches)
            except StopIteration:
                self.epoch, self.consumed = self.epoch + 1, 0
                self._batches = self._start()
                batch = next(self._batches)
        except BaseException:
            self.close()  # a worker's error (or Ctrl-C) leaves no worker behind
            raise
        first = batch[0] if isinstance(batch, list | tuple) else batch
        self.consumed += len(first)
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])
        self.close()

    def close(self) -> None:
        """Stop the loader workers; the next batch starts new ones at the saved position."""
        shut_down_workers(self._batches)
        self._batches = None
