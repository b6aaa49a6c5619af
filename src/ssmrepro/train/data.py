"""Deterministic, resumable batches.

Map-style datasets (``__len__`` + ``__getitem__``; ``set_epoch(epoch)`` is called at the start of
every epoch when the dataset has it): a :class:`ResumableDistributedSampler`
(``torch.utils.data.DistributedSampler`` semantics: a permutation per epoch seeded by
``seed + epoch``, rank ``r`` of ``w`` takes positions ``r, r + w, ...``) that can start in the
middle of an epoch. Every sample is drawn with the global python/numpy/torch generators seeded
from ``(run seed, epoch, position in the epoch's permutation)`` and restored afterwards, so random
crops, flips and generated masks depend neither on the number of loader workers, nor on the
number of ranks, nor on where a run was resumed. The feed's state is ``(epoch, position)``,
position counted in samples of the global permutation.

Iterable datasets: one process only; the stream draws from its own generator states (swapped in
around each batch), and a resumed run replays the current epoch up to the saved position.
"""

from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

from .checkpoint import derive_seed, isolated_rng, seed_everything


def is_map_style(dataset: Any) -> bool:
    return (not isinstance(dataset, IterableDataset) and hasattr(dataset, "__getitem__")
            and hasattr(dataset, "__len__"))


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler (shuffle, drop_last) yielding ``(epoch, position, index)`` keys and
    starting at global position ``start`` of the epoch."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int, epoch: int = 0, start: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True,
                         seed=int(seed), drop_last=True)
        self.epoch = int(epoch)
        self.start = int(start)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        indices = torch.randperm(len(self.dataset), generator=g).tolist()[: self.total_size]
        for j in range(self.start + self.rank, self.total_size, self.num_replicas):
            yield (self.epoch, j, indices[j])

    def __len__(self) -> int:
        return max(0, (self.total_size - self.start) // self.num_replicas)


class SeededSamples(Dataset):
    """``dataset[index]`` drawn under global generators seeded from (seed, epoch, position)."""

    def __init__(self, dataset, seed: int):
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, position, index = key
        with isolated_rng(derive_seed(self.seed, "sample", epoch, position)):
            return self.dataset[index]


def _worker_init(worker_id: int) -> None:  # pragma: no cover - runs in loader workers
    info = torch.utils.data.get_worker_info()
    seed_everything(info.seed % 2**63 if info is not None else worker_id)


class MapFeed:
    """Batches of a map-style dataset for one rank; state = (epoch, global position)."""

    def __init__(self, dataset, *, seed: int, rank: int, world_size: int, batch_size: int,
                 num_workers: int = 0, pin_memory: bool = False):
        self.dataset = SeededSamples(dataset, seed)
        self.seed, self.rank, self.world = int(seed), int(rank), int(world_size)
        self.batch_size = int(batch_size)  # per rank
        self.num_workers = int(num_workers)
        self.pin_memory = pin_memory
        self.epoch, self.position = 0, 0
        self._it = None
        per_rank = len(dataset) // self.world
        self.steps_per_epoch = per_rank // self.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the dataset has {len(dataset)} samples, fewer than one global batch of "
                f"{self.batch_size * self.world}"
            )

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world

    def _loader(self):
        base = self.dataset.dataset
        if hasattr(base, "set_epoch"):  # datasets that draw from (seed, epoch, index), as ssmrepro.data's
            base.set_epoch(self.epoch)
        sampler = ResumableDistributedSampler(self.dataset, self.world, self.rank, self.seed,
                                              self.epoch, self.position)
        return iter(DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True,
            num_workers=self.num_workers, worker_init_fn=_worker_init if self.num_workers else None,
            generator=torch.Generator().manual_seed(derive_seed(self.seed, "loader", self.epoch, self.rank)),
            pin_memory=self.pin_memory, persistent_workers=False,
        ))

    def next(self):
        for _ in range(2):
            if self._it is None:
                self._it = self._loader()
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                self.epoch, self.position = self.epoch + 1, 0
                continue
            self.position += self.global_batch
            return batch
        raise RuntimeError("the data loader yielded no batch for a whole epoch")  # pragma: no cover

    def state_dict(self) -> dict[str, int]:
        return {"kind": "map", "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        if self.position % self.global_batch:
            raise ValueError(
                f"saved data position {self.position} is not a multiple of the global batch "
                f"{self.global_batch}"
            )
        self._it = None

    def close(self) -> None:
        self._it = None


class _StreamRNG:
    """Private python/numpy/torch generator states for an iterable data stream."""

    def __init__(self, seed: int):
        with isolated_rng(seed):
            self.states = (random.getstate(), np.random.get_state(), torch.get_rng_state())

    def __enter__(self):
        self.saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.setstate(self.states[0])
        np.random.set_state(self.states[1])
        torch.set_rng_state(self.states[2])

    def __exit__(self, *exc):
        self.states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.setstate(self.saved[0])
        np.random.set_state(self.saved[1])
        torch.set_rng_state(self.saved[2])


class IterFeed:
    """Batches of an iterable dataset (single process); state = (epoch, batches consumed)."""

    def __init__(self, dataset, *, seed: int, batch_size: int):
        self.dataset, self.seed, self.batch_size = dataset, int(seed), int(batch_size)
        self.epoch, self.position = 0, 0
        self._it = None
        self._rng = None

    def _start(self, skip: int):
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        self._rng = _StreamRNG(derive_seed(self.seed, "stream", self.epoch))
        with self._rng:
            self._it = iter(DataLoader(self.dataset, batch_size=self.batch_size, num_workers=0))
            for _ in range(skip):
                next(self._it)

    def next(self):
        for _ in range(2):
            if self._it is None:
                self._start(self.position)
            try:
                with self._rng:
                    batch = next(self._it)
            except StopIteration:
                self._it = None
                self.epoch, self.position = self.epoch + 1, 0
                continue
            self.position += 1
            return batch
        raise RuntimeError("the iterable dataset yielded no batch for a whole epoch")

    def state_dict(self) -> dict[str, int]:
        return {"kind": "iterable", "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._it = None

    def close(self) -> None:
        self._it = None


def make_feed(dataset, *, seed: int, rank: int, world_size: int, batch_size: int,
              num_workers: int = 0, pin_memory: bool = False):
    if is_map_style(dataset):
        return MapFeed(dataset, seed=seed, rank=rank, world_size=world_size, batch_size=batch_size,
                       num_workers=num_workers, pin_memory=pin_memory)
    if world_size > 1:
        raise ValueError("an iterable dataset cannot be sharded by the loop; give a map-style dataset for DDP")
    return IterFeed(dataset, seed=seed, batch_size=batch_size)
