"""Where okc's augmentation ops draw their random numbers.

On the device, from torch's global generator, as Kornia's ops do (the run's seed and the
checkpoint's RNG state cover it). In the per-sample stage, which runs in the loader threads, from
a generator of the sample's own, seeded by (seed, epoch, index): threads drawing from the global
generator would interleave with each other and with the training loop, so neither a run nor a
resumed run could repeat its augmentations. Kornia's own ops cannot take a generator; a Kornia op
ahead of a size op in ``augment`` still draws from the global one (okc's flips do not).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

_LOCAL = threading.local()


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A seed for one sample of one epoch: nearby values give unrelated streams."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2)
    return int(state[0]) << 31 | int(state[1]) >> 1


@contextmanager
def sample_generator(seed: int) -> Iterator[None]:
    """Within the block, okc's ops on CPU tensors in this thread draw from ``seed``'s stream."""
    previous = getattr(_LOCAL, "generator", None)
    _LOCAL.generator = torch.Generator().manual_seed(seed)
    try:
        yield
    finally:
        _LOCAL.generator = previous


def _generator(device: torch.device | str) -> torch.Generator | None:
    generator = getattr(_LOCAL, "generator", None)
    return generator if generator is not None and torch.device(device).type == "cpu" else None


def rand(
    *shape: int | Sequence[int], device: torch.device | str, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    return torch.rand(*shape, device=device, dtype=dtype, generator=_generator(device))


def randn(
    *shape: int | Sequence[int], device: torch.device | str, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    return torch.randn(*shape, device=device, dtype=dtype, generator=_generator(device))


def randint(
    low: int, high: int | torch.Tensor, shape: Sequence[int], *, device: torch.device | str
) -> torch.Tensor:
    return torch.randint(low, high, tuple(shape), device=device, generator=_generator(device))


def multinomial(weights: torch.Tensor, count: int) -> torch.Tensor:
    return torch.multinomial(weights, count, replacement=True, generator=_generator(weights.device))
