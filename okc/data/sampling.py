"""Which sample indices each batch of an epoch holds, on this rank: order, shard, batch.

Everything is a pure function of (seed, epoch, rank, world_size), so a resumed run only needs the
epoch and how many batches were read; no generator state is saved. Sharding follows
``DistributedSampler``: rank ``r`` takes every ``world_size``-th index of the epoch's order. With
``drop_last`` the tail that does not fill every rank is dropped; with ``pad`` (training without
``drop_last``) the order is padded by wrapping around so every rank runs the same number of steps
(DDP would hang otherwise); without either, every sample is read exactly once across ranks and
ranks may differ by one sample (evaluation: metrics see no duplicates).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class IndexSampler(Protocol):
    """A sampler from the SAMPLERS registry: the order of one epoch, before sharding."""

    def num_indices(self, num_samples: int) -> int: ...

    def order(self, num_samples: int, generator: torch.Generator) -> torch.Tensor: ...


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator for (seed, epoch): nearby seeds and epochs give unrelated streams."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


class BatchOrder:
    """The batches (lists of dataset indices) one rank reads in an epoch."""

    def __init__(
        self,
        num_samples: int,
        *,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = False,
        sampler: IndexSampler | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _per_rank(self) -> int:
        total = self.sampler.num_indices(self.num_samples) if self.sampler else self.num_samples
        if self.world_size == 1:
            return total
        if self.drop_last:
            return total // self.world_size
        if self.pad:
            return math.ceil(total / self.world_size)
        return len(range(self.rank, total, self.world_size))

    def __len__(self) -> int:
        count = self._per_rank()
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def indices(self) -> torch.Tensor:
        """This rank's indices for the current epoch, in reading order."""
        generator = epoch_generator(self.seed, self.epoch)
        if self.sampler is not None:
            order = self.sampler.order(self.num_samples, generator)
        elif self.shuffle:
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        if self.world_size > 1:
            total = self._per_rank() * self.world_size
            if total > len(order) and len(order):  # pad by wrapping around
                order = order.repeat(math.ceil(total / len(order)))
            if self.drop_last or self.pad:
                order = order[:total]
            order = order[self.rank :: self.world_size]
        return order

    def __iter__(self) -> Iterator[list[int]]:
        order = self.indices().tolist()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start : start + self.batch_size]
