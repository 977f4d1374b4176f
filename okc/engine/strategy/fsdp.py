"""FSDP2 (``fully_shard``): parameters, gradients and optimizer state sharded over the ranks.

Checkpoints are sharded too (``sharded_checkpoints``): each rank saves and loads only its own
shards through torch.distributed.checkpoint, so saving costs memory in proportion to the shard,
not the model (docs/distributed.md has the numbers). ``sharded=False`` still gathers whole
tensors, for a caller that wants one file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from okc.engine.strategy.base import is_dtensor, keyed_by_name, named_optimizer_state
from okc.engine.strategy.parallel import ParallelStrategy
from okc.errors import ConfigError


class FSDPStrategy(ParallelStrategy):
    """``trainer.strategy: fsdp``."""

    name = "fsdp"
    sharded_checkpoints = True

    def wrap(self, module: nn.Module, *, shard_units: Sequence[nn.Module] = ()) -> nn.Module:
        """Shard each of ``shard_units`` on its own (so only one unit's parameters are whole at
        a time), then the rest of ``module`` (torchtitan's ``apply_fsdp`` order)."""
        from torch.distributed.fsdp import fully_shard

        if self.sync_batchnorm:
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        mesh = dist.device_mesh.init_device_mesh(self.device.type, (self.env.world_size,))
        for unit in shard_units:
            fully_shard(unit, mesh=mesh)
        return fully_shard(module, mesh=mesh)

    def gradient_sync(
        self, module: nn.Module, *, enabled: bool
    ) -> contextlib.AbstractContextManager[Any]:
        """On micro-steps FSDP2 keeps the unsharded gradients and adds the next backward to
        them; the backward with sync on reduce-scatters the sum once (no collective before)."""
        return _requires_gradient_sync(module, enabled)

    def channels_last(self, setting: bool | str, model: nn.Module, *, half: bool) -> bool:
        """FSDP2 shards only contiguous parameters: ``auto`` stays NCHW, ``true`` is refused."""
        if setting is True:
            raise ConfigError(
                "trainer.channels_last",
                "FSDP2 (strategy fsdp) cannot shard channels_last weights: use false or ddp",
            )
        return False

    # --- checkpoint state -------------------------------------------------------------------------

    def model_state(self, model: nn.Module, *, sharded: bool = False) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(model, options=_options(whole=not sharded))

    def load_model_state(self, model: nn.Module, state: Mapping[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        options = StateDictOptions(full_state_dict=_whole(state))
        set_model_state_dict(model, dict(state), options=options)

    def optimizer_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, *, sharded: bool = False
    ) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer, options=_options(whole=not sharded))

    def load_optimizer_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        if not keyed_by_name(state):  # a file saved by DDP or one process
            state = named_optimizer_state(model, optimizer, state)
        options = StateDictOptions(full_state_dict=_whole(state.get("state", {})))
        set_optimizer_state_dict(model, optimizer, state, options=options)


@contextlib.contextmanager
def _requires_gradient_sync(module: nn.Module, enabled: bool) -> Iterator[None]:
    module.set_requires_gradient_sync(enabled)  # type: ignore[operator]
    yield


def _options(*, whole: bool) -> Any:
    """Gathering whole tensors puts them on the CPU (one copy per rank, as a single file needs);
    shards stay where they are."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=whole, cpu_offload=whole)


def _whole(state: Mapping[str, Any]) -> bool:
    """Whether a state holds whole tensors (a single-file checkpoint) rather than shards."""

    def leaves(x: Any) -> Iterator[Any]:
        if isinstance(x, Mapping):
            for v in x.values():
                yield from leaves(v)
        else:
            yield x

    return not any(is_dtensor(v) for v in leaves(state))
