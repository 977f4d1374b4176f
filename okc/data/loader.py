"""The one module that knows torchdata: a stateful, threaded batch loader.

torchdata is quiet upstream, so nothing else imports it; swapping the backend means rewriting this
file only. The graph is ``BatchOrder → map(load_batch) in threads → [pin memory] → prefetch``:
work is mapped per *batch* (the sampler yields a batch's indices), which keeps torchdata's
per-item queue and snapshot overhead per batch rather than per sample. Threads, not processes:
decoding (torchvision, PIL) and tensor ops release the GIL, and threads share the dataset without
pickling it. torchdata snapshots the sampler per batch, so a saved state resumes after exactly the
batches already handed out, even with batches in flight. That holds for ordered delivery only:
with ``in_order: false`` a resume can skip batches that were in flight (measured).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

from torchdata.nodes import Loader, Mapper, ParallelMapper, PinMemory, Prefetcher, SamplerWrapper

from okc.data.sampling import BatchOrder


class BatchLoader:
    """Iterate over ``load(indices)`` for each batch of ``order``; saves and restores its position.

    ``set_epoch`` picks the epoch the next iteration reads. A loaded state applies to the next
    iteration when it is of the same epoch; moving to another epoch drops it (its epoch is over).
    """

    def __init__(
        self,
        order: BatchOrder,
        load: Callable[[list[int]], Any],
        *,
        num_workers: int = 0,
        in_order: bool = True,
        pin_memory: bool = False,
        prefetch: int = 2,
    ) -> None:
        self.order = order
        self._exact = in_order or num_workers == 0
        # The epoch is ours to set: keep torchdata from counting epochs itself.
        self._sampler = SamplerWrapper(order, epoch_updater=lambda epoch: epoch)
        if num_workers > 0:
            node = ParallelMapper(
                self._sampler, load, num_workers, in_order=in_order, method="thread"
            )
        else:
            node = Mapper(self._sampler, load)
        if pin_memory:
            node = PinMemory(node)
        if num_workers > 0:
            node = Prefetcher(node, prefetch_factor=max(1, prefetch))
        # No restart: a state saved after the last batch resumes to an empty rest of the epoch.
        self._loader = Loader(node, restart_on_stop_iteration=False)
        self._pending_epoch: int | None = None

    @property
    def epoch(self) -> int:
        return self._sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        if self._pending_epoch is not None and self._pending_epoch != epoch:
            self._loader.load_state_dict(None)  # type: ignore[arg-type]  # drop the pending state
            self._pending_epoch = None
        self._sampler.epoch = epoch

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[Any]:
        self._pending_epoch = None
        return iter(self._loader)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "loader": self._loader.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self._exact:
            warnings.warn(
                "in_order: false: torchdata's resume assumes ordered batches, so up to "
                "num_workers batches that were in flight when the state was saved may be skipped",
                stacklevel=3,
            )
        self._loader.load_state_dict(state["loader"])
        self._sampler.epoch = state["epoch"]
        self._pending_epoch = state["epoch"]
