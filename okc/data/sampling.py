"""Which sample indices each batch of an epoch holds, on this rank: order, shard, batch.

Everything is a pure function of (seed, epoch, rank, world_size), so a resumed run only needs the
epoch and how many batches were read; no generator state is saved. Sharding follows
``DistributedSampler``: rank ``r`` takes every ``world_size``-th index of the epoch's order. With
``drop_last`` the tail that does not fill every rank is dropped; with ``pad`` (training without
``drop_last``) the order is padded by wrapping around so every rank runs the same number of steps
(DDP would hang otherwise); without either, every sample is read exactly once across ranks and
ranks may differ by one sample (evaluation: metrics see no duplicates).

A ``BatchSampler`` (class-balanced P×K batches) orders whole batches: each run of ``batch_size``
indices of its order is one batch, so ranks take every ``world_size``-th *batch*, padding and
dropping whole batches by the same rules; striding single indices would mix its batches up.
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


@runtime_checkable
class BatchSampler(IndexSampler, Protocol):
    """A sampler whose order is made of whole batches of ``batch_size`` indices."""

    batch_size: int


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
        # the unit that ranks share out: single indices, or a batch sampler's whole batches
        self.unit = sampler.batch_size if isinstance(sampler, BatchSampler) else 1
        if self.unit not in (1, batch_size):
            raise ValueError(
                f"the sampler makes batches of {self.unit} samples, but batch_size is {batch_size}"
            )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _per_rank(self) -> int:
        total = self.sampler.num_indices(self.num_samples) if self.sampler else self.num_samples
        if self.world_size == 1:
            return total
        units = total // self.unit
        if self.drop_last:
            count = units // self.world_size
        elif self.pad:
            count = math.ceil(units / self.world_size)
        else:
            count = len(range(self.rank, units, self.world_size))
        return count * self.unit

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
            units = order.reshape(-1, self.unit)
            if self.drop_last or self.pad:  # every rank reads the same number of units
                total = self._per_rank() // self.unit * self.world_size
                if total > len(units) and len(units):  # pad by wrapping around
                    units = units.repeat(math.ceil(total / len(units)), 1)
                units = units[:total]
            order = units[self.rank :: self.world_size].reshape(-1)
        return order

    def __iter__(self) -> Iterator[list[int]]:
        order = self.indices().tolist()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start : start + self.batch_size]
