"""A component's params as an attrs class, structured by the one converter (``okc.config.convert``).

Every registered component declares its params once:

- explicitly, as a class attribute ``Params`` (a frozen attrs class). Groups that many components
  share (the image-source keys of every dataset, the model keys of every task) are one class each,
  reused by inheritance, so TorchOk's flat YAML keys stay flat. Cross-field rules live beside the
  fields, in ``__attrs_post_init__``, raising ``ParamError(key, message)``. Such a component is
  built as ``Component(params, **injected)``;
- or by its typed keyword signature, which ``params_class`` turns into an attrs class (annotations
  the converter cannot structure, such as ``nn.Module`` or ``Callable``, accept any value). Such a
  component is built as ``Component(**params, **injected)``. Library components (``torch.optim``,
  ``torchmetrics``, ``timm``) are bound this way too.

The experiment keeps each ``params`` as the mapping the user wrote: which class structures it is
known only once ``name`` resolves (after the experiment's ``imports`` load user modules), and the
resolved print shows the file as written. ``bind`` is the only place a config's ``params`` are
checked: ``okc check`` calls it and so does
building, so a rule is stated once and a built component never re-validates. Errors are relative
to the params mapping (``lr: expected float, got 'ten'``); callers place them with
``okc.errors.at``/``under``.
"""

from __future__ import annotations

import collections.abc as cabc
import enum
import functools
import inspect
import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any

import attrs

from okc.config.convert import structure, unstructure
from okc.errors import ConfigError, ConfigErrors

_SEQUENCES = (list, tuple, cabc.Sequence, cabc.Iterable, cabc.Collection, cabc.MutableSequence)
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)
_SCALARS = (bool, int, float, str, type(None))


def declared(target: Any) -> type | None:
    """The attrs class ``target`` declares as ``Params``, if it declares one.

    A subclass that writes its own ``__init__`` without its own ``Params`` (a user's dataset
    with a keyword signature) is bound by that signature, not by the ``Params`` it inherits.
    """
    params = getattr(target, "Params", None)
    if not (inspect.isclass(params) and attrs.has(params)):
        return None
    for klass in target.__mro__ if inspect.isclass(target) else ():
        if "Params" in vars(klass):
            break
        if "__init__" in vars(klass):
            return None
    return params


def structurable(t: Any) -> Any:
    """``t`` where the converter can structure it strictly; ``Any`` where it cannot tell
    (a ``Callable``, an ``nn.Module``, a class of a library): such values pass as given."""
    if t in (Any, object, inspect.Parameter.empty) or isinstance(t, (str, typing.ForwardRef)):
        return Any
    if t is None or t in _SCALARS:
        return type(None) if t is None else t
    if inspect.isclass(t) and (issubclass(t, enum.Enum) or attrs.has(t)):
        return t
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is typing.Literal:
        return t
    if origin in (typing.Union, types.UnionType):
        members = [structurable(a) for a in args]
        return Any if Any in members else typing.Union[tuple(members)]  # noqa: UP007
    if t in _SEQUENCES or origin in _SEQUENCES:
        if origin is tuple and args and args[-1] is not Ellipsis:
            return tuple[tuple(structurable(a) for a in args)]  # type: ignore[misc]
        item = structurable(args[0]) if args else Any
        return tuple[item, ...] if (origin or t) is tuple else list[item]  # type: ignore[valid-type]
    if t in _MAPPINGS or origin in _MAPPINGS:
        return dict[str, structurable(args[1]) if len(args) == 2 else Any]  # type: ignore[misc]
    return Any


def _hints(target: Any) -> dict[str, Any]:
    try:
        fn = target.__init__ if inspect.isclass(target) else target
        return typing.get_type_hints(fn)
    except Exception:  # annotations that do not resolve (a TYPE_CHECKING import): any value
        return {}


@functools.cache
def params_class(target: Any, injected: frozenset[str] = frozenset()) -> type:
    """The attrs class of ``target``'s params: its declared ``Params``, or one made from its
    keyword parameters less ``injected`` (which okc passes itself). Made classes are open
    (``__okc_open__``) when the signature takes ``**kwargs``."""
    what = getattr(target, "__name__", repr(target))
    own = target if inspect.isclass(target) and attrs.has(target) else declared(target)
    if own is not None:  # errors name the component: "NormCfg has no parameter 'tpye'"
        if "__okc_component__" not in vars(own):  # stamped per class, never inherited
            own.__okc_component__ = what
        return own
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: anything goes
        sig = inspect.Signature([inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)])
    hints = _hints(target)
    fields: dict[str, Any] = {}
    for name, p in sig.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY) or name in injected:
            continue
        kind = structurable(hints.get(name, p.annotation))
        default = attrs.NOTHING if p.default is p.empty else p.default
        fields[name] = attrs.field(type=kind, default=default, alias=name)
    cls = attrs.make_class(f"{what}Params", fields, frozen=True, kw_only=True)
    cls.__okc_component__ = what
    cls.__okc_injected__ = injected
    cls.__okc_open__ = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return cls


def bind(
    target: Callable[..., Any], params: Mapping[str, Any] | None, injected: Collection[str] = ()
) -> Any:
    """``params`` structured for ``target``: its ``Params`` instance when it declares one (an
    attrs class: the instance itself), else the keyword arguments to call it with (the keys set,
    typed; extra keys of a ``**kwargs`` signature pass as given). Raises ``ConfigErrors``
    relative to the params mapping."""
    cls = params_class(target, frozenset(injected))
    params = dict(params or {})
    if cls is target or declared(target) is not None:
        return _structure(params, cls)
    names = {a.name for a in attrs.fields(cls)}
    open_ = cls.__okc_open__
    extra = {k: v for k, v in params.items() if open_ and k not in names and k not in injected}
    bound = _structure({k: v for k, v in params.items() if k not in extra}, cls)
    return {k: getattr(bound, k) for k in params if k not in extra} | extra


def given(owner: type, params: Any, keys: Mapping[str, Any]) -> Any:
    """The ``Params`` instance a component that declares them is built with: ``params`` as okc
    passes it, or the keywords a Python caller wrote (cfg instances allowed), structured as a
    config's are. One place for every ``__init__(self, params=None, /, **keys)``."""
    if params is None:
        return _structure(unstructure(dict(keys)), owner.Params)
    if keys:
        raise TypeError(f"{owner.__name__} takes its Params or keywords, not both")
    return params


def _structure(params: dict[str, Any], cls: type) -> Any:
    """``structure`` with its errors in the order of the config's keys (then those at the root,
    a missing key): the order a reader finds them in."""
    try:
        return structure(params, cls)
    except ConfigErrors as err:
        order = {k: i for i, k in enumerate(params)}
        first = lambda e: order.get(e.path.split(".")[0], len(order))  # noqa: E731
        raise ConfigErrors(sorted(err.errors, key=first)) from None


def problems(
    target: Callable[..., Any], params: Mapping[str, Any] | None, injected: Collection[str] = ()
) -> list[ConfigError]:
    """``bind``'s errors as a list (empty when ``params`` bind)."""
    try:
        bind(target, params, injected)
    except ConfigErrors as err:
        return err.errors
    except ConfigError as err:
        return [err]
    return []


def call(target: Callable[..., Any], bound: Any, injected: Mapping[str, Any]) -> Any:
    """Build ``target`` from what ``bind`` returned (an attrs class: the instance is built)."""
    if isinstance(bound, dict):
        return target(**bound, **injected)
    if inspect.isclass(target) and isinstance(bound, target):
        return bound
    return target(bound, **injected)
