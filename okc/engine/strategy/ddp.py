"""DistributedDataParallel: every rank holds the whole model; gradients are all-reduced."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from torch import nn

from okc.engine.strategy.parallel import ParallelStrategy


class DDPStrategy(ParallelStrategy):
    """``trainer.strategy: ddp`` (the default with several processes)."""

    name = "ddp"

    def wrap(self, module: nn.Module, *, shard_units: Sequence[nn.Module] = ()) -> nn.Module:
        if self.sync_batchnorm:
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        device = self.device
        device_ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

    def gradient_sync(
        self, module: nn.Module, *, enabled: bool
    ) -> contextlib.AbstractContextManager[Any]:
        if enabled or not isinstance(module, nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return module.no_sync()
