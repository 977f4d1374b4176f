"""Small ``build_*`` functions that turn an experiment into the objects the loop runs."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import attrs

from okc.config.bind import make
from okc.config.schema import Experiment, Phase, Trainer
from okc.errors import ConfigError, at
from okc.registry import TASKS
from okc.tasks.base import BaseTask

# Lightning Trainer arguments TorchOk files may carry that okc accepts but does not act on.
_UNSUPPORTED = {
    "min_steps": None, "overfit_batches": 0.0, "val_check_interval": None, "profiler": None,
    "barebones": False, "reload_dataloaders_every_n_epochs": 0, "num_nodes": 1,
    "use_distributed_sampler": True, "inference_mode": True,
}  # fmt: skip


def warn_unsupported(trainer: Trainer) -> None:
    """A setting that silently does nothing would mislead: say so once."""
    for key, default in _UNSUPPORTED.items():
        value = getattr(trainer, key)
        if value != default:
            warnings.warn(
                f"trainer.{key}={value!r} has no effect in okc (it is accepted so TorchOk "
                "experiments load)",
                stacklevel=3,
            )


def build_task(exp: Experiment) -> BaseTask:
    with at("task"):
        return make(TASKS, exp.task.name, exp.task.params)


@attrs.frozen
class Limits:
    """How far each phase runs, from the trainer's ``max_*`` / ``limit_*`` / ``fast_dev_run``."""

    max_epochs: int
    max_steps: int
    batches: dict[Phase, int | float | None]
    sanity_steps: int
    log_every: int
    max_seconds: float | None = None


def limits(trainer: Trainer) -> Limits:
    fast = trainer.fast_dev_run
    if fast:
        n = 1 if fast is True else int(fast)
        return Limits(1, n, dict.fromkeys(Phase, n), 0, 1)
    max_epochs = trainer.max_epochs
    if max_epochs is None:
        max_epochs = 1000 if trainer.max_steps == -1 else -1
        if trainer.max_steps == -1:
            warnings.warn(
                "neither trainer.max_epochs nor trainer.max_steps is set: training for 1000 "
                "epochs (Lightning's default)",
                stacklevel=3,
            )
    batches = {
        Phase.TRAIN: trainer.limit_train_batches,
        Phase.VALID: trainer.limit_val_batches,
        Phase.TEST: trainer.limit_test_batches,
        Phase.PREDICT: trainer.limit_predict_batches,
    }
    sanity = 2 if trainer.num_sanity_val_steps is None else trainer.num_sanity_val_steps
    log_every = 50 if trainer.log_every_n_steps is None else max(1, trainer.log_every_n_steps)
    return Limits(
        max_epochs, trainer.max_steps, batches, sanity, log_every, max_seconds(trainer.max_time)
    )


def max_seconds(max_time: str | Mapping[str, float] | None) -> float | None:
    """Lightning's ``max_time``: ``"DD:HH:MM:SS"`` or ``{days, hours, minutes, seconds}``."""
    if max_time is None:
        return None
    if isinstance(max_time, str):
        parts = max_time.split(":")
        if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
            raise ConfigError("trainer.max_time", f"expected 'DD:HH:MM:SS', got {max_time!r}")
        d, h, m, s = (int(p) for p in parts)
        return float(((d * 24 + h) * 60 + m) * 60 + s)
    units = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
    unknown = set(max_time) - set(units)
    if unknown:
        raise ConfigError("trainer.max_time", f"unknown units {sorted(unknown)}; use {list(units)}")
    return float(sum(units[k] * v for k, v in max_time.items()))


def batch_limit(limit: int | float | None, available: int) -> int:
    """Batches to run of ``available``: an int is a count, a float a fraction (Lightning)."""
    if limit is None:
        return available
    if isinstance(limit, float) and limit <= 1.0:
        return min(available, max(1, math.floor(available * limit))) if limit > 0 else 0
    return min(available, int(limit))
