"""Build components from registries with config params bound by ``okc.config.params``.

Components keep plain keyword arguments or a declared ``Params`` class (usable without okc's config
system); ``okc.config.params.bind`` structures a config's ``params`` for them with the one
converter — unknown keys with did-you-mean, missing required ones, values that contradict the
annotations — before anything heavy is built. Errors are relative to the entry they concern
(``params.lr``, ``name``); the caller places them in the experiment with ``okc.errors.at``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from typing import Any

from okc.config.params import bind, call, problems
from okc.errors import ConfigError, ConfigErrors, OkcError, ParamError, at, did_you_mean, under
from okc.registry import Registry


def raise_if(errors: list[ConfigError]) -> None:
    if errors:
        raise ConfigErrors(errors)


def construct(
    target: Callable[..., Any], params: Mapping[str, Any] | None = None, /, **injected: Any
) -> Any:
    """``target`` built from config ``params`` (bound by ``okc.config.params.bind``) plus
    ``injected``; errors relative to the params mapping.

    A value the constructor still rejects (a ``ParamError``, ValueError, TypeError) is reported
    at the params (at its key for a ``ParamError``); the original stays chained for ``--debug``.
    """
    bound = bind(target, params, injected)
    try:
        return call(target, bound, injected)
    except OkcError:
        raise
    except ParamError as err:
        raise ConfigError(err.key, err.message) from err
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError("", f"{getattr(target, '__name__', target)}: {err}") from err


def make(
    registry: Registry, name: str, params: Mapping[str, Any] | None = None, /, **injected: Any
) -> Any:
    """The component of a ``{name, params}`` entry; errors at ``name`` or ``params.<key>``."""
    with at("name"):
        target = registry.get(name)
    with at("params"):
        return construct(target, params, **injected)


def entry_problems(
    registry: Registry, name: str, params: Mapping[str, Any] | None, injected: Collection[str] = ()
) -> list[ConfigError]:
    """``make``'s checks without building: the name resolves and the params bind."""
    try:
        with at("name"):
            target = registry.get(name)
    except ConfigError as err:
        return [err]
    return under("params", problems(target, params, injected))


def mapping_problems(
    fn: Callable[..., Any], mapping: Mapping[str, str], what: str
) -> list[ConfigError]:
    """Problems feeding ``fn`` with ``mapping`` ({argument: task output key}) from a config,
    relative to the mapping.

    A misspelled argument would otherwise be a TypeError inside the first step; here it is an
    error at its key. Signatures with ``*args``/``**kwargs`` accept anything.
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
                errors.append(ConfigError(arg, f"{what} takes no '{arg}'{hint}"))
    if inspect.Parameter.VAR_POSITIONAL not in kinds:
        for name, p in named.items():
            if p.default is p.empty and name not in mapping:
                errors.append(
                    ConfigError("", f"{what} needs '{name}'; map it to one of the task's outputs")
                )
    return errors
