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
from okc.config.bind import construct, entry_problems, make, raise_if
from okc.config.params import bind, problems
from okc.errors import ConfigError, at, under
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
    index: int = 0  # in the experiment's optimization section


def needs_monitor(scheduler: Any) -> bool:
    """Whether ``scheduler`` steps on a logged value (ReduceLROnPlateau, timm's plateau)."""
    from timm.scheduler import PlateauLRScheduler

    return isinstance(scheduler, (torch.optim.lr_scheduler.ReduceLROnPlateau, PlateauLRScheduler))


def check_optimization(specs: Sequence[schema.Optimization]) -> list[ConfigError]:
    """Every problem found without a model (names, params, paramwise_cfg, module overlaps),
    relative to the ``optimization`` section."""
    errors = P.overlap_errors([s.modules for s in specs])
    for i, spec in enumerate(specs):
        errors += under(str(i), _entry_errors(spec))
    return errors


def _entry_errors(spec: schema.Optimization) -> list[ConfigError]:
    opt, sch = spec.optimizer, spec.scheduler
    errors = under("optimizer", entry_problems(OPTIMIZERS, opt.name, opt.params, ("params",)))
    errors += under("optimizer.paramwise_cfg", problems(P.ParamwiseCfg, opt.paramwise_cfg))
    if sch is not None:
        errors += under(
            "scheduler", entry_problems(SCHEDULERS, sch.name, sch.params, ("optimizer",))
        )
        if sch.pl_params.frequency < 1:
            errors.append(ConfigError("scheduler.pl_params.frequency", "must be at least 1"))
    return errors


def build_optimization(
    specs: Sequence[schema.Optimization], model: nn.Module
) -> list[OptimizerPair]:
    """One ``OptimizerPair`` per entry, each over its share of ``model``'s trainable parameters;
    errors at ``optimization.<i>``."""
    with at("optimization"):
        raise_if(check_optimization(specs))
        shares = P.select(model, [s.modules for s in specs])
        pairs = []
        for i, (spec, named) in enumerate(zip(specs, shares, strict=True)):
            with at(str(i)):
                pairs.append(_build_pair(spec, model, named, index=i))
        return pairs


def _build_pair(
    spec: schema.Optimization, model: nn.Module, named: P.Named, *, index: int
) -> OptimizerPair:
    with at("optimizer"):
        optimizer = _build_optimizer(spec.optimizer, model, named)
    pair = OptimizerPair(optimizer, param_names=tuple(n for n, _ in named), index=index)
    if spec.scheduler is None:
        return pair
    pl = spec.scheduler.pl_params
    with at("scheduler"):
        scheduler = make(
            SCHEDULERS, spec.scheduler.name, spec.scheduler.params, optimizer=optimizer
        )
        _check_timm_interval(scheduler, pl.interval)
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
    spec: schema.Optimizer, model: nn.Module, named: P.Named
) -> torch.optim.Optimizer:
    """The optimizer over ``named``'s param groups; check proved its name and params bind."""
    target = OPTIMIZERS.get(spec.name)
    params = bind(target, spec.params, ("params",))
    cfg = construct(P.ParamwiseCfg, spec.paramwise_cfg) if spec.paramwise_cfg else None
    with at("paramwise_cfg"):
        groups = P.param_groups(
            model,
            named,
            cfg,
            base_lr=_setting(target, params, "lr"),
            base_wd=_setting(target, params, "weight_decay"),
        )
    return make(OPTIMIZERS, spec.name, spec.params, params=groups)


def _setting(target: Any, params: Mapping[str, Any], key: str) -> float | None:
    """``params[key]``, else the optimizer's default for it (AdamW decays by default)."""
    if key in params:
        return params[key]
    parameter = inspect.signature(target).parameters.get(key)
    if parameter is None or not isinstance(parameter.default, (int, float)):
        return None
    return parameter.default


def _check_timm_interval(scheduler: Any, interval: str) -> None:
    """timm schedulers count epochs or updates (``t_in_epochs``): the interval must agree."""
    if not is_timm_scheduler(scheduler) or needs_monitor(scheduler):
        return
    in_epochs = getattr(scheduler, "t_in_epochs", True)
    if in_epochs != (interval == "epoch"):
        unit = "epochs" if in_epochs else "updates"
        raise ConfigError(
            "pl_params.interval",
            f"{type(scheduler).__name__} counts {unit} (t_in_epochs: {in_epochs}) but steps every "
            f"{interval}; set params.t_in_epochs: {not in_epochs} or interval: "
            f"{'epoch' if in_epochs else 'step'}",
        )
