"""What every multi-process strategy shares: the collectives, over the default process group."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from okc.engine.strategy.base import Strategy, is_dtensor


class ParallelStrategy(Strategy):
    """Collectives over torch.distributed's default group (gloo on CPUs, NCCL on GPUs)."""

    def barrier(self) -> None:
        dist.barrier()

    def all_reduce_mean(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        if not values:
            return values
        keys = sorted(values)
        stacked = torch.stack([values[k].detach().float() for k in keys])
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        stacked /= self.env.world_size
        return dict(zip(keys, stacked.unbind(), strict=True))

    def all_reduce_flag(self, flag: bool) -> bool:
        box = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(box, op=dist.ReduceOp.MAX)
        return bool(box.item())  # sync point

    def broadcast_object(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sync_buffers(self, module: nn.Module) -> None:
        """DDP broadcasts buffers at the start of each training forward, so after the last step
        each rank holds BatchNorm stats updated by its own last batch; evaluation must use one
        model everywhere. (FSDP2 shards only parameters: its buffers are plain tensors too.)"""
        for buffer in module.buffers():
            if not is_dtensor(buffer):
                dist.broadcast(buffer.data, src=0)
