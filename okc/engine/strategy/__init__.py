"""One Strategy per kind of parallelism, picked once from ``trainer.strategy``.

``select_strategy`` is the only place that reads the setting. The loop calls the chosen object
(wrap, gradient sync, collectives, checkpoint state, memory format) and never asks which one it
holds; Lightning Fabric's ``strategies/`` and torchtitan's ``parallelize`` functions are the
models. A new kind of parallelism is one more module here and one more line below.
"""

from __future__ import annotations

import warnings

from okc.config.schema import Trainer
from okc.engine.distributed import DistEnv
from okc.engine.strategy.base import Strategy
from okc.engine.strategy.ddp import DDPStrategy
from okc.engine.strategy.fsdp import FSDPStrategy
from okc.engine.strategy.single import SingleDeviceStrategy
from okc.errors import ConfigError

__all__ = ["DDPStrategy", "FSDPStrategy", "SingleDeviceStrategy", "Strategy", "select_strategy"]


def select_strategy(trainer: Trainer, env: DistEnv) -> Strategy:
    """The strategy for ``trainer.strategy`` in this process group (``auto``: DDP when several
    processes run, else the single device)."""
    strategy = _select(trainer, env)
    if trainer.checkpoint_async and not strategy.sharded_checkpoints:
        warnings.warn(
            f"trainer.checkpoint_async has no effect with {strategy.name}: only FSDP2's sharded "
            "checkpoints are written in the background",
            stacklevel=2,
        )
    return strategy


def _select(trainer: Trainer, env: DistEnv) -> Strategy:
    name = trainer.strategy
    if not env.distributed:
        for key, value, default in (("strategy", name, "auto"),
                                    ("sync_batchnorm", trainer.sync_batchnorm, False)):  # fmt: skip
            if value not in (default, "single_device"):
                warnings.warn(f"trainer.{key}={value} has no effect in a single process",
                              stacklevel=4)  # fmt: skip
        return SingleDeviceStrategy(env)
    if name == "single_device":
        raise ConfigError(
            "trainer.strategy",
            f"single_device runs one process, but {env.world_size} were started: use ddp or fsdp",
        )
    kind = FSDPStrategy if name == "fsdp" else DDPStrategy
    return kind(env, sync_batchnorm=trainer.sync_batchnorm)
