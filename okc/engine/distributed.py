"""Processes and devices: which device this process uses, its rank, whether it is the main one.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) okc joins the process group torchrun
set up: NCCL on GPUs, gloo on CPUs. Everything that writes files or prints asks ``is_main()``.
What the ranks then do together (wrapping, collectives, checkpoint state) is the Strategy's
(``okc.engine.strategy``).
"""

from __future__ import annotations

import attrs
import torch
import torch.distributed as dist
from torch.distributed.constants import default_pg_timeout

from okc.config.schema import Trainer
from okc.engine import cluster, rendezvous
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
        backend = "nccl" if device.type == "cuda" else "gloo"
        if rendezvous.uses_agent_store():  # a fresh store per torchrun round (see there)
            timeout = default_pg_timeout
            store = rendezvous.fresh_store(rank, timeout)
            dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                                    timeout=timeout)  # fmt: skip
        else:
            dist.init_process_group(backend)
    return DistEnv(device=device, rank=rank, local_rank=local_rank, world_size=world_size)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
