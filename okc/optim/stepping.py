"""Step schedulers the way Lightning did for TorchOk, for torch and timm schedulers alike.

The loop calls ``step_schedulers(pairs, "step", index=global_step)`` after each optimizer step and
``step_schedulers(pairs, "epoch", index=epochs_done, metrics=logged)`` at the end of each epoch
(after validation, so plateau schedulers see this epoch's values). A pair steps when its interval
matches and ``index % frequency == 0``; ``index`` counts from 1, as Lightning's did. Plateau
schedulers read ``pl_params.monitor`` from the logged values.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Literal

import torch

from okc.errors import ConfigError
from okc.optim.build import OptimizerPair, needs_monitor
from okc.optim.schedulers import is_timm_scheduler

Logged = Mapping[str, float | torch.Tensor]


def step_schedulers(
    pairs: Iterable[OptimizerPair],
    interval: Literal["step", "epoch"],
    *,
    index: int,
    metrics: Logged | None = None,
) -> None:
    """Step every scheduler whose interval is ``interval`` and whose frequency divides ``index``."""
    for pair in pairs:
        if pair.scheduler is not None and pair.interval == interval and index % pair.frequency == 0:
            scheduler_step(pair, metrics, index=index)


def scheduler_step(
    pair: OptimizerPair, metrics: Logged | None = None, *, index: int | None = None
) -> bool:
    """Step ``pair``'s scheduler once; False when it did not step (none, or no monitored value).

    ``index`` (the step or epoch count) is needed by timm schedulers, which are told where they are
    rather than counting calls.
    """
    scheduler = pair.scheduler
    if scheduler is None:
        return False
    value = None
    if needs_monitor(scheduler):
        value = _monitored(pair, metrics or {})
        if value is None:
            return False
    if is_timm_scheduler(scheduler):
        assert index is not None, "timm schedulers need the step or epoch index"
        if pair.interval == "epoch":
            scheduler.step(epoch=index, metric=value)
        else:
            scheduler.step_update(num_updates=index, metric=value)
    elif value is not None:
        scheduler.step(value)
    else:
        scheduler.step()
    return True


def _monitored(pair: OptimizerPair, metrics: Logged) -> float | None:
    if pair.monitor in metrics:
        return float(metrics[pair.monitor])  # sync point: the scheduler needs a host number
    name = type(pair.scheduler).__name__
    message = (
        f"{name} watches '{pair.monitor}', which is not among the logged values: "
        f"{', '.join(sorted(metrics)) or 'none'}"
    )
    if pair.strict:
        raise ConfigError(f"optimization.{pair.index}.scheduler.pl_params.monitor", message)
    warnings.warn(f"{message}; the lr is not updated (pl_params.strict is false)", stacklevel=3)
    return None
