"""Augmentations and transforms from config, as batched ops on the device.

Names are Kornia's own (any ``kornia.augmentation`` 2D class, through the registry's fallback) and
the albumentations names TorchOk configs use, registered in ``albu_geometric`` and
``albu_photometric`` with albumentations' (1.3.0) parameters and defaults. Every parameter an
adapter accepts is implemented or refused with an error naming it; approximations are noted in
the adapters' and ops' docstrings. Where both libraries have a name (RandomCrop, Resize,
CenterCrop, RandomResizedCrop, RandomBrightness, ...) both parameter styles are accepted:
albumentations' ``height``/``width`` and Kornia's ``size``, ``interpolation`` and ``resample``.
Containers (Compose, OneOf, SomeOf, Sequential) take ``params.transforms``, a list of
``{name, params}``.

Masks and boxes follow the geometric ops (``okc.data.ops``); only Kornia's own elastic, fisheye
and thin-plate warps refuse boxes, when a dataset with boxes builds its pipeline.

Where each op runs (``split_augment``, ``split_transform``): size ops, whose output size depends
on the input's, run on each sample before batching; the rest on the batch, on the device.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import kornia.augmentation as K
from torch import nn

from okc.config.bind import raise_if
from okc.config.params import problems
from okc.data import albu_geometric, albu_photometric, ops  # albu_*: register the names
from okc.errors import ConfigError, ConfigErrors, OkcError, ParamError, at, under
from okc.registry import AUGMENTATIONS

ADAPTER_MODULES = (albu_geometric, albu_photometric)  # imported for their registrations
_register = AUGMENTATIONS.register
CONTAINERS = ("Compose", "Sequential", "OneOf", "SomeOf")


# --- the Kornia fallback --------------------------------------------------------------------------


@functools.cache
def _kornia_ops() -> dict[str, type]:
    mixes = tuple(c for c in (getattr(K, "MixAugmentationBaseV2", None),) if c is not None)
    return {
        name: cls
        for name, cls in vars(K).items()
        if inspect.isclass(cls)
        and issubclass(cls, K.AugmentationBase2D)
        and not name.endswith("Base2D")
        and not (mixes and issubclass(cls, mixes))  # mixing needs labels: not an image op
    }


def kornia_lookup(name: str) -> type | None:
    return _kornia_ops().get(name)


def kornia_names() -> list[str]:
    return list(_kornia_ops())


# --- building from config -------------------------------------------------------------------------


def entry(item: Any) -> tuple[str, dict[str, Any]]:
    """``(name, params)`` of a config entry: an ``Augmentation`` or a ``{name, params}`` mapping."""
    if isinstance(item, Mapping):
        extra = set(item) - {"name", "params"}
        if extra:
            raise ConfigError(sorted(extra)[0], "unknown key; an entry has name and params")
        name, params = item.get("name"), item.get("params") or {}
    else:
        name, params = getattr(item, "name", None), getattr(item, "params", None) or {}
    if not isinstance(name, str):
        raise ConfigError("", "expected a mapping with 'name' (and optional 'params')")
    if not isinstance(params, Mapping):
        raise ConfigError("params", f"expected a mapping, got {params!r}")
    return name, dict(params)


def check_ops(items: Sequence[Any]) -> list[ConfigError]:
    """Problems in a transform/augment list, relative to it (``2.params.p``): names, params,
    nested transforms, and the values an op refuses when built (building an op reads no data)."""
    try:
        build_ops(items)
    except ConfigErrors as err:
        return err.errors
    return []


def build_ops(items: Sequence[Any]) -> list[nn.Module]:
    """Build a transform/augment list; every entry's errors at once, relative to the list."""
    built: list[nn.Module] = []
    errors: list[ConfigError] = []
    for i, item in enumerate(items):
        try:
            with at(str(i)):
                built.append(_build(item))
        except ConfigErrors as err:
            errors += err.errors
        except ConfigError as err:
            errors.append(err)
    raise_if(errors)
    return built


def _build(item: Any) -> nn.Module:
    name, params = entry(item)
    with at("name"):
        target = AUGMENTATIONS.get(name)
    if "always_apply" in params and "always_apply" not in _parameters(target):
        always = params.pop("always_apply")  # albumentations: apply regardless of p
        params["p"] = 1.0 if always else params.get("p", _parameters(target)["p"].default)
    nested = params.get("transforms")
    if nested is not None and not isinstance(nested, (list, tuple)):
        raise ConfigError("params.transforms", "expected a list")
    errors = under("params", problems(target, params))
    if nested is not None:
        try:
            params["transforms"] = build_ops(nested)
        except ConfigErrors as err:
            errors += under("params.transforms", err.errors)
    raise_if(errors)
    if nested is None and target in _kornia_ops().values():
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    try:
        op = target(**params)
    except OkcError:
        raise
    except ParamError as err:
        raise ConfigError(f"params.{err.key}", f"{name}: {err.message}") from err
    except (ValueError, TypeError, KeyError, AssertionError) as err:
        raise ConfigError("params", f"{name}: {err}") from err
    if not isinstance(op, nn.Module):
        raise ConfigError("name", f"{name} does not build an augmentation module")
    return op


def _parameters(target: Any) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(target).parameters
    except (TypeError, ValueError):
        return {}


# --- containers ---------------------------------------------------------------------------------


@_register
def Compose(*, transforms: Sequence[nn.Module], p: float = 1.0) -> nn.Module:
    """All transforms in order, the whole applied to a sample with probability ``p``."""
    return ops.Compose(transforms, p=p)


@_register
def Sequential(*, transforms: Sequence[nn.Module], p: float = 0.5) -> nn.Module:
    """albumentations Sequential: Compose with a default p of 0.5."""
    return ops.Compose(transforms, p=p)


@_register
def OneOf(*, transforms: Sequence[nn.Module], p: float = 0.5) -> nn.Module:
    """One transform per sample, chosen with weights proportional to the transforms' own p."""
    return ops.OneOf(transforms, p=p)


@_register
def SomeOf(
    *, transforms: Sequence[nn.Module], n: int = 1, replace: bool = False, p: float = 1.0
) -> nn.Module:
    """``n`` transforms per sample."""
    return ops.SomeOf(transforms, n=n, replace=replace, p=p)


# --- the pipeline's view -------------------------------------------------------------------------


def split_transform(built: Sequence[nn.Module]) -> tuple[list[nn.Module], list[nn.Module]]:
    """``transform`` ops run per sample on the CPU (size ops) and on the batch (the rest).

    The transform's size ops run before the batched augmentations: a fixed-size Resize makes a
    batch of any images, so augment can run on the device. Deterministic resizing commutes with
    flips exactly and with colour ops nearly; what moves is the scale at which pixel-sized
    parameters of augment (a blur's kernel, an elastic sigma) act: the model's input size.
    """
    per_sample = [op for op in built if ops.runs_per_sample(op)]
    batched = [
        op for op in built if not ops.runs_per_sample(op) and not isinstance(op, ops.Identity)
    ]
    return per_sample, batched


def split_augment(built: Sequence[nn.Module]) -> tuple[list[nn.Module], list[nn.Module]]:
    """``augment`` ops that run on each sample before batching, and those that run batched.

    Everything up to and including augment's last size op (or container holding one) runs per
    sample, in the file's order, random ops before it included: a size op after a random op
    (``[RandomCrop, Resize]``, ``[Flip, Compose([PadIfNeeded, CenterCrop], p=0.5)]``) must see
    that op's output, and images of different sizes cannot be batched before it. The rest runs on
    the batch, on the device, after the transform's size ops.
    """
    last = max((i for i, op in enumerate(built) if ops.holds_size_op(op)), default=-1)
    groups: list[list[nn.Module]] = []  # consecutive random ops share one float round trip
    for op in map(ops.per_sample_form, built[: last + 1]):
        if groups and not ops.runs_per_sample(op) and not ops.runs_per_sample(groups[-1][-1]):
            groups[-1].append(op)
        else:
            groups.append([op])
    per_sample = [
        ops.OneSample(group[0] if ops.runs_per_sample(group[0]) else ops.Chain(group))
        for group in groups
    ]
    return per_sample, list(built[last + 1 :])
