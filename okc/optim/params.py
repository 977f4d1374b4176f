"""Which parameters each optimizer trains, and their param groups (mmcv-style ``paramwise_cfg``).

Selection (okc; TorchOk gave every optimizer every parameter): ``modules`` lists name prefixes,
matched on a dot boundary (``backbone`` takes ``backbone.*``, not ``backbone2.*``); the one
optimizer without ``modules`` takes every trainable parameter the others leave. Frozen parameters
(``requires_grad`` false) are left out, so a callback that unfreezes a module must add its
parameters to an optimizer.

Groups follow mmcv's ``DefaultOptimizerConstructor``: a ``custom_keys`` entry whose key is a
substring of the parameter name sets ``lr_mult``/``decay_mult`` (longest key wins, ties
alphabetical) and disables the other rules; otherwise biases (outside norm layers) take
``bias_lr_mult``, norm layers' parameters ``norm_decay_mult``, depthwise convolutions
``dwconv_decay_mult`` and other biases ``bias_decay_mult``. Unlike mmcv, parameters that end up
with the same lr and weight decay share a group, which keeps foreach/fused optimizer kernels
batched; and a 1-input-channel convolution is not mistaken for a depthwise one.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import attrs
from torch import nn

from okc.config.bind import raise_if
from okc.errors import ConfigError, did_you_mean

Named = list[tuple[str, nn.Parameter]]

# Wrappers that insert a path segment into parameter names (torch.compile, activation checkpointing,
# FSDP1): configs name the module as written, so the segment is dropped before matching.
_WRAPPER_SEGMENTS = ("_orig_mod", "_checkpoint_wrapped_module", "_fsdp_wrapped_module")

_NORMS = tuple(
    c
    for c in (
        nn.modules.batchnorm._BatchNorm,
        nn.modules.instancenorm._InstanceNorm,
        nn.GroupNorm,
        nn.LayerNorm,
        getattr(nn, "RMSNorm", None),
    )
    if c is not None
)
_NO_EFFECT = ("dcn_offset_lr_mult", "bypass_duplicate")  # accepted for TorchOk configs, unused


@attrs.frozen(kw_only=True)
class Mults:
    lr_mult: float = 1.0
    decay_mult: float = 1.0


@attrs.frozen(kw_only=True)
class ParamwiseCfg:
    """An optimizer's ``paramwise_cfg``, structured by the converter (``okc.config.convert``)."""

    custom_keys: dict[str, Mults] = attrs.field(factory=dict)  # parameter-name substring
    bias_lr_mult: float = 1.0
    bias_decay_mult: float = 1.0
    norm_decay_mult: float = 1.0
    dwconv_decay_mult: float = 1.0
    dcn_offset_lr_mult: Any = None
    bypass_duplicate: Any = None


def clean_name(name: str) -> str:
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_SEGMENTS)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def overlap_errors(modules: Sequence[Sequence[str]]) -> list[ConfigError]:
    """Clashes seen without a model (nested or repeated prefixes, several catch-all optimizers),
    relative to the ``optimization`` section."""
    errors: list[ConfigError] = []
    catch_all = [i for i, mods in enumerate(modules) if not mods]
    for i in catch_all[1:]:
        errors.append(
            ConfigError(
                f"{i}.modules",
                f"optimization.{catch_all[0]} already takes every parameter no other optimizer "
                "claims; list the modules this optimizer trains",
            )
        )
    flat = [(i, j, prefix) for i, mods in enumerate(modules) for j, prefix in enumerate(mods)]
    for n, (i, j, prefix) in enumerate(flat):
        for k, m, other in flat[:n]:
            if _under(prefix, other) or _under(other, prefix):
                why = "list it once" if k == i else "a parameter can have one optimizer only"
                errors.append(
                    ConfigError(
                        f"{i}.modules.{j}",
                        f"'{prefix}' overlaps '{other}' (optimization.{k}.modules.{m}); {why}",
                    )
                )
    return errors


def select(model: nn.Module, modules: Sequence[Sequence[str]]) -> list[Named]:
    """The trainable ``(name, parameter)`` pairs of each optimizer, in model order; errors
    relative to the ``optimization`` section."""
    named = [(clean_name(n), p) for n, p in model.named_parameters() if p.requires_grad]
    every = {clean_name(n) for n, _ in model.named_parameters()}
    every |= {clean_name(n) for n, _ in model.named_modules() if n}
    errors: list[ConfigError] = overlap_errors(modules)
    chosen: list[Named] = []
    for i, mods in enumerate(modules):
        picked: Named = []
        for j, prefix in enumerate(mods):
            hits = [(n, p) for n, p in named if _under(n, prefix)]
            if not hits:
                why = (
                    "all its parameters are frozen"
                    if prefix in every
                    else "the model has no module or parameter of that name"
                    + did_you_mean(prefix, every)
                )
                errors.append(ConfigError(f"{i}.modules.{j}", f"'{prefix}': {why}"))
            picked += hits
        chosen.append(picked)
    claimed = {id(p) for group in chosen for _, p in group}
    rest = [(n, p) for n, p in named if id(p) not in claimed]
    for i, mods in enumerate(modules):
        if not mods:
            chosen[i] = rest
            rest = []
            if not chosen[i]:
                errors.append(ConfigError(str(i), "no trainable parameter is left for it"))
    raise_if(errors)
    if rest:
        names = ", ".join(n for n, _ in rest[:5]) + (", ..." if len(rest) > 5 else "")
        warnings.warn(
            f"{len(rest)} trainable parameters are in no optimizer's modules and will not be "
            f"trained: {names}",
            stacklevel=3,
        )
    return chosen


def param_groups(
    model: nn.Module,
    named: Named,
    cfg: ParamwiseCfg | None,
    *,
    base_lr: float | None,
    base_wd: float | None,
) -> list[dict[str, Any]]:
    """Param groups for ``named``: one plain group without ``cfg``, else one per (lr, wd);
    errors relative to ``paramwise_cfg``."""
    if cfg is None:
        return [{"params": [p for _, p in named]}]
    for key in _NO_EFFECT:
        if getattr(cfg, key) is not None:
            warnings.warn(f"paramwise_cfg.{key} has no effect in okc", stacklevel=3)
    owners = _owners(model)
    custom = cfg.custom_keys
    order = sorted(sorted(custom), key=len, reverse=True)  # longest first, ties alphabetical
    used: set[str] = set()
    groups: dict[tuple[float | None, float | None], list[nn.Parameter]] = {}
    for name, param in named:
        module, local = owners[id(param)]
        key = next((k for k in order if k in name), None)
        if key is not None:
            used.add(key)
            lr_mult, wd_mult = custom[key].lr_mult, custom[key].decay_mult
        else:
            lr_mult, wd_mult = _default_mults(module, local, cfg)
        if lr_mult != 1.0 and base_lr is None:
            raise ConfigError("", "an lr multiplier needs the optimizer's 'lr' to be set")
        lr = None if base_lr is None else base_lr * lr_mult
        wd = None if base_wd is None else base_wd * wd_mult
        groups.setdefault((lr, wd), []).append(param)
    for key in custom:
        if key not in used:
            warnings.warn(f"paramwise_cfg.custom_keys.{key} matches no parameter", stacklevel=3)
    return [_group(params, lr, wd) for (lr, wd), params in groups.items()]


def _group(params: list[nn.Parameter], lr: float | None, wd: float | None) -> dict[str, Any]:
    group: dict[str, Any] = {"params": params}
    if lr is not None:
        group["lr"] = lr
    if wd is not None:
        group["weight_decay"] = wd
    return group


def _default_mults(module: nn.Module, local: str, cfg: ParamwiseCfg) -> tuple[float, float]:
    is_norm = isinstance(module, _NORMS)
    is_bias = local == "bias"
    is_dwconv = (
        isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
    )
    lr_mult = cfg.bias_lr_mult if is_bias and not is_norm else 1.0
    if is_norm:
        wd_mult = cfg.norm_decay_mult
    elif is_dwconv:
        wd_mult = cfg.dwconv_decay_mult
    elif is_bias:
        wd_mult = cfg.bias_decay_mult
    else:
        wd_mult = 1.0
    return lr_mult, wd_mult


def _owners(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    """Parameter id → (the module that holds it, its local name)."""
    return {
        id(p): (module, local)
        for _, module in model.named_modules()
        for local, p in module.named_parameters(recurse=False)
    }
