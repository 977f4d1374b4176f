"""Processes and devices: which device this process uses, whether it is the main one, and the one
function that wraps the model for data parallelism.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) okc joins the process group torchrun
set up: NCCL on GPUs, gloo on CPUs. Everything that writes files or prints asks ``is_main()``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import Any

import attrs
import torch
import torch.distributed as dist
from torch import Tensor, nn

from okc.config.schema import Trainer
from okc.engine import cluster
from okc.errors import ConfigError


@attrs.frozen
class DistEnv:
    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _device(trainer: Trainer, local_rank: int) -> torch.device:
    wants_gpu = trainer.accelerator in ("gpu", "cuda")
    if wants_gpu and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.accelerator",
            f"'{trainer.accelerator}' but no CUDA device is available; use cpu or auto",
        )
    if trainer.accelerator == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if isinstance(trainer.devices, tuple):
        return torch.device("cuda", trainer.devices[local_rank])
    return torch.device("cuda", local_rank)


def setup(trainer: Trainer) -> DistEnv:
    """The device and ranks of this process; joins torchrun's process group when there is one
    (or SLURM's, whose variables ``cluster.detect`` exports as torchrun's)."""
    job = cluster.detect(trainer)
    world_size, rank, local_rank = job.world_size, job.rank, job.local_rank
    device = _device(trainer, local_rank)
    requested = trainer.devices
    if world_size == 1 and isinstance(requested, int) and requested > 1:
        raise ConfigError(
            "trainer.devices",
            f"{requested} devices need one process each: okc.fit/validate/test/predict (and "
            "`okc fit`) start them; a Loop built directly needs `torchrun --nproc_per_node "
            f"{requested} ...`",
        )
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistEnv(device=device, rank=rank, local_rank=local_rank, world_size=world_size)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(
    module: nn.Module,
    env: DistEnv,
    *,
    strategy: str,
    sync_batchnorm: bool,
    shard_units: Sequence[nn.Module] = (),
) -> nn.Module:
    """The one place that decides data parallelism: DDP (default when distributed) or FSDP2.

    FSDP2 shards each of ``shard_units`` on its own (so only one unit's parameters are whole at a
    time), then the rest of ``module``.
    """
    if not env.distributed:
        if strategy in ("ddp", "fsdp"):
            warnings.warn(
                f"trainer.strategy={strategy} has no effect in a single process", stacklevel=2
            )
        return module
    if sync_batchnorm:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        mesh = dist.device_mesh.init_device_mesh(env.device.type, (env.world_size,))
        for unit in shard_units:
            fully_shard(unit, mesh=mesh)
        return fully_shard(module, mesh=mesh)
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def gradient_sync(module: nn.Module, *, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """A context that skips DDP's gradient all-reduce when ``enabled`` is False (accumulation
    steps before the optimizer step); a no-op for anything that is not DDP."""
    if enabled or not isinstance(module, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return module.no_sync()


def all_reduce_mean(values: dict[str, Tensor]) -> dict[str, Tensor]:
    """Mean over ranks of scalar tensors (one collective for all of them)."""
    if not dist.is_initialized() or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float() for k in keys])
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    stacked /= dist.get_world_size()
    return dict(zip(keys, stacked.unbind(), strict=True))


def sync_buffers(module: nn.Module) -> None:
    """Give every rank the main process's buffers (BatchNorm running stats) before evaluating.

    DDP broadcasts buffers at the start of each training forward, so after the last step each
    rank holds stats updated by its own last batch; evaluation must use one model everywhere.
    """
    if not dist.is_initialized():
        return
    for buffer in module.buffers():
        if not _is_dtensor(buffer):
            dist.broadcast(buffer.data, src=0)


def broadcast_object(obj: Any) -> Any:
    """The main process's ``obj`` on every rank (e.g. the run folder's timestamp)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's whole state dict on every rank, also when FSDP2 shards it."""
    if not _is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, broadcast_from_rank0=False)
    return get_model_state_dict(model, options=options)


def load_full_state_dict(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load a whole state dict into ``model``, sharding it when FSDP2 shards the model."""
    if not _is_sharded(model):
        model.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    if not _is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    if not _is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(
        model, optimizer, state, options=StateDictOptions(full_state_dict=True)
    )


def _is_sharded(model: nn.Module) -> bool:
    return any(_is_dtensor(p) for p in model.parameters())


def _is_dtensor(t: Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)
