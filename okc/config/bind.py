"""Bind a component's config ``params`` to its constructor before anything heavy is built.

Components keep plain keyword arguments (usable without okc's config system); this module checks a
config's ``params`` against that signature — unknown keys with did-you-mean, missing required ones,
values that contradict the annotations — and builds components from registries with errors that
name the config key path rather than a traceback from inside torch.
"""

from __future__ import annotations

import collections.abc as cabc
import inspect
import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any

from okc.config.convert import type_name
from okc.errors import ConfigError, ConfigErrors, OkcError, ParamError, did_you_mean
from okc.registry import Registry

_SEQUENCES = (list, tuple, cabc.Sequence, cabc.Iterable, cabc.Collection)


def matches(value: Any, t: Any) -> bool | None:
    """Whether ``value`` fits annotation ``t``; None when the annotation is too rich to tell."""
    if t in (Any, inspect.Parameter.empty, object):
        return None
    origin, args = typing.get_origin(t), typing.get_args(t)
    if t is type(None) or t is None:
        return value is None
    if t is bool:
        return isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t is str:
        return isinstance(value, str)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        results = [matches(value, a) for a in args]
        return True if any(results) else (None if None in results else False)
    if origin in _SEQUENCES or t in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                return False
            results = [matches(v, a) for v, a in zip(value, args, strict=True)]
        else:
            results = [matches(v, args[0]) for v in value] if args else []
        return False if False in results else (None if None in results else True)
    if origin in (dict, cabc.Mapping) or t in (dict, cabc.Mapping):
        return isinstance(value, cabc.Mapping)
    return None


def _signature(target: Callable[..., Any]) -> tuple[inspect.Signature, dict[str, Any]]:
    sig = inspect.signature(target)
    try:
        init = target.__init__ if inspect.isclass(target) else target
        hints = typing.get_type_hints(init)
    except Exception:  # unresolvable annotations: check names only
        hints = {}
    return sig, hints


def check_params(
    target: Callable[..., Any],
    params: Mapping[str, Any],
    *,
    path: str,
    injected: Collection[str] = (),
) -> list[ConfigError]:
    """Problems binding ``params`` (at config ``path``) to ``target``'s signature.

    ``injected`` are arguments okc supplies itself (a head's ``in_channels``); setting them in the
    config is an error, and they are never reported missing.
    """
    what = getattr(target, "__name__", repr(target))
    sig, hints = _signature(target)
    accepted = {
        n: p
        for n, p in sig.parameters.items()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY)
    }
    open_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    errors: list[ConfigError] = []
    for key, value in params.items():
        where = f"{path}.{key}"
        if key in injected:
            errors.append(ConfigError(where, f"okc sets '{key}' of {what} itself; remove it"))
        elif key not in accepted:
            if not open_kwargs:
                hint = did_you_mean(key, [n for n in accepted if n not in injected])
                errors.append(ConfigError(where, f"{what} has no parameter '{key}'{hint}"))
        elif matches(value, hints.get(key, accepted[key].annotation)) is False:
            expected = type_name(hints.get(key, accepted[key].annotation))
            errors.append(ConfigError(where, f"expected {expected}, got {value!r}"))
    for name, p in accepted.items():
        if p.default is p.empty and name not in params and name not in injected:
            errors.append(ConfigError(path, f"{what} needs '{name}', which is not set"))
    return errors


def raise_if(errors: list[ConfigError]) -> None:
    if errors:
        raise ConfigErrors(errors)


def resolve(registry: Registry, name: str, *, path: str) -> Any:
    """``registry.get(name)`` with the config key path in the error."""
    try:
        return registry.get(name)
    except OkcError as err:
        raise ConfigError(path, str(err)) from None


def build(
    registry: Registry,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    name_path: str,
    params_path: str,
    **injected: Any,
) -> Any:
    """Look up ``name``, check ``params`` and call the component with them plus ``injected``.

    Errors raised by the constructor for bad values (ValueError, TypeError) are reported at
    ``params_path``; the original exception stays chained for ``--debug``.
    """
    target = resolve(registry, name, path=name_path)
    params = dict(params or {})
    raise_if(check_params(target, params, path=params_path, injected=injected))
    try:
        return target(**params, **injected)
    except OkcError:
        raise
    except ParamError as err:
        raise ConfigError(f"{params_path}.{err.key}", err.message) from err
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(params_path, f"{name}: {err}") from err


def check_component(
    registry: Registry,
    name: str,
    params: Mapping[str, Any] | None,
    *,
    name_path: str,
    params_path: str,
    injected: Collection[str] = (),
) -> list[ConfigError]:
    """``build``'s checks without building: the name resolves and the params bind."""
    try:
        target = resolve(registry, name, path=name_path)
    except ConfigError as err:
        return [err]
    return check_params(target, dict(params or {}), path=params_path, injected=injected)


def check_mapping(
    fn: Callable[..., Any], mapping: Mapping[str, str], *, path: str, what: str
) -> list[ConfigError]:
    """Problems feeding ``fn`` with ``mapping`` ({argument: task output key}) from a config.

    A misspelled argument would otherwise be a TypeError inside the first step; here it is an
    error at its key path. Signatures with ``*args``/``**kwargs`` accept anything.
    """
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return []
    kinds = {p.kind for p in params.values()}
    named = {
        n: p
        for n, p in params.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"
    }
    errors: list[ConfigError] = []
    if inspect.Parameter.VAR_KEYWORD not in kinds:
        for arg in mapping:
            if arg not in named:
                hint = did_you_mean(arg, named) or f"; it takes {', '.join(named) or 'nothing'}"
                errors.append(ConfigError(f"{path}.{arg}", f"{what} takes no '{arg}'{hint}"))
    if inspect.Parameter.VAR_POSITIONAL not in kinds:
        for name, p in named.items():
            if p.default is p.empty and name not in mapping:
                errors.append(
                    ConfigError(path, f"{what} needs '{name}'; map it to one of the task's outputs")
                )
    return errors
