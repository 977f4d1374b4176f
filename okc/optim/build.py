"""Build the ``optimization`` section: one optimizer per entry, each with its optional scheduler.

Optimizers come from the registry (any ``torch.optim`` name), schedulers likewise (any
``torch.optim.lr_scheduler`` name, timm's, okc's). Each pair keeps the scheduler's Lightning-style
``pl_params`` (interval, frequency, monitor) for ``okc.optim.stepping``. Build the optimizers on the
unwrapped model (before DDP), or on a compiled one: ``_orig_mod.`` is ignored in names; with FSDP2,
build them after ``fully_shard`` so they hold the sharded parameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import torch
from torch import nn

from okc.config import schema
from okc.config.bind import build, check_params, raise_if, resolve
from okc.errors import ConfigError, OkcError
from okc.optim import params as P
from okc.optim.schedulers import is_timm_scheduler
from okc.registry import OPTIMIZERS, SCHEDULERS


@attrs.define(eq=False)
class OptimizerPair:
    """An optimizer, its scheduler and when to step the scheduler."""

    optimizer: torch.optim.Optimizer
    scheduler: Any | None = None
    interval: Literal["step", "epoch"] = "epoch"
    frequency: int = 1
    monitor: str | None = None  # set only for schedulers that step on a logged value
    strict: bool = True  # a missing monitored value is an error (else a warning and no step)
    name: str | None = None
    param_names: tuple[str, ...] = ()
    path: str = "optimization.0"


def needs_monitor(scheduler: Any) -> bool:
    """Whether ``scheduler`` steps on a logged value (ReduceLROnPlateau, timm's plateau)."""
    from timm.scheduler import PlateauLRScheduler

    return isinstance(scheduler, (torch.optim.lr_scheduler.ReduceLROnPlateau, PlateauLRScheduler))


def check_optimization(
    specs: Sequence[schema.Optimization], *, path: str = "optimization"
) -> list[ConfigError]:
    """Every problem found without a model: names, params, paramwise_cfg, module overlaps."""
    errors = P.overlap_errors([s.modules for s in specs], path=path)
    for i, spec in enumerate(specs):
        where = f"{path}.{i}"
        opt = OPTIMIZERS.find(spec.optimizer.name)
        if opt is None:
            message = OPTIMIZERS.unknown_message(spec.optimizer.name)
            errors.append(ConfigError(f"{where}.optimizer.name", message))
        else:
            errors += check_params(
                opt, spec.optimizer.params, path=f"{where}.optimizer.params", injected=("params",)
            )
        cfg = spec.optimizer.paramwise_cfg
        errors += P.check_paramwise(cfg, path=f"{where}.optimizer.paramwise_cfg")
        if spec.scheduler is not None:
            sch = SCHEDULERS.find(spec.scheduler.name)
            if sch is None:
                message = SCHEDULERS.unknown_message(spec.scheduler.name)
                errors.append(ConfigError(f"{where}.scheduler.name", message))
            else:
                errors += check_params(
                    sch,
                    spec.scheduler.params,
                    path=f"{where}.scheduler.params",
                    injected=("optimizer",),
                )
            if spec.scheduler.pl_params.frequency < 1:
                errors.append(
                    ConfigError(f"{where}.scheduler.pl_params.frequency", "must be at least 1")
                )
    return errors


def build_optimization(
    specs: Sequence[schema.Optimization], model: nn.Module, *, path: str = "optimization"
) -> list[OptimizerPair]:
    """One ``OptimizerPair`` per entry, each over its share of ``model``'s trainable parameters."""
    raise_if(check_optimization(specs, path=path))
    shares = P.select(model, [s.modules for s in specs], path=path)
    return [
        _build_pair(spec, model, named, path=f"{path}.{i}")
        for i, (spec, named) in enumerate(zip(specs, shares, strict=True))
    ]


def _build_pair(
    spec: schema.Optimization, model: nn.Module, named: P.Named, *, path: str
) -> OptimizerPair:
    optimizer = _build_optimizer(spec.optimizer, model, named, path=f"{path}.optimizer")
    pair = OptimizerPair(optimizer, param_names=tuple(n for n, _ in named), path=path)
    if spec.scheduler is None:
        return pair
    pl = spec.scheduler.pl_params
    scheduler = build(
        SCHEDULERS,
        spec.scheduler.name,
        spec.scheduler.params,
        name_path=f"{path}.scheduler.name",
        params_path=f"{path}.scheduler.params",
        optimizer=optimizer,
    )
    _check_timm_interval(scheduler, pl.interval, path=f"{path}.scheduler")
    return attrs.evolve(
        pair,
        scheduler=scheduler,
        interval=pl.interval,
        frequency=pl.frequency,
        monitor=pl.monitor if needs_monitor(scheduler) else None,
        strict=pl.strict,
        name=pl.name,
    )


def _build_optimizer(
    spec: schema.Optimizer, model: nn.Module, named: P.Named, *, path: str
) -> torch.optim.Optimizer:
    # Not bind.build: its own ``params`` argument would swallow the optimizer's ``params``.
    target = resolve(OPTIMIZERS, spec.name, path=f"{path}.name")
    groups = P.param_groups(
        model,
        named,
        spec.paramwise_cfg,
        base_lr=_setting(target, spec.params, "lr"),
        base_wd=_setting(target, spec.params, "weight_decay"),
        path=f"{path}.paramwise_cfg",
    )
    try:
        return target(groups, **spec.params)
    except OkcError:
        raise
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"{path}.params", f"{spec.name}: {err}") from err


def _setting(target: Any, params: Mapping[str, Any], key: str) -> float | None:
    """``params[key]``, else the optimizer's default for it (AdamW decays by default)."""
    if key in params:
        return params[key]
    parameter = inspect.signature(target).parameters.get(key)
    if parameter is None or not isinstance(parameter.default, (int, float)):
        return None
    return parameter.default


def _check_timm_interval(scheduler: Any, interval: str, *, path: str) -> None:
    """timm schedulers count epochs or updates (``t_in_epochs``): the interval must agree."""
    if not is_timm_scheduler(scheduler) or needs_monitor(scheduler):
        return
    in_epochs = getattr(scheduler, "t_in_epochs", True)
    if in_epochs != (interval == "epoch"):
        unit = "epochs" if in_epochs else "updates"
        raise ConfigError(
            f"{path}.pl_params.interval",
            f"{type(scheduler).__name__} counts {unit} (t_in_epochs: {in_epochs}) but steps every "
            f"{interval}; set params.t_in_epochs: {not in_epochs} or interval: "
            f"{'epoch' if in_epochs else 'step'}",
        )
