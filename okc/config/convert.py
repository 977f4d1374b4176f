"""The one cattrs converter: plain data ⇄ experiment classes, strictly, with key-path errors.

Structuring is strict where YAML would silently coerce: ``max_epochs: ten`` or ``shuffle: "yes"`` is
an error, not ``True``. Errors from cattrs' exception groups are turned into ``ConfigError``s that
name the dotted key path (``data.TRAIN.0.dataloader.batch_size``), what was expected and what was
found, and suggest the closest key for unknown ones.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn

from okc.errors import ConfigError, ConfigErrors, ParamError, did_you_mean, join

T = TypeVar("T")


class Mismatch(TypeError):
    """A value of the wrong type or outside a Literal's choices."""

    def __init__(self, expected: str, value: Any) -> None:
        self.expected = expected
        self.value = value
        super().__init__(f"expected {expected}, got {value!r}")


def type_name(t: Any) -> str:
    """How a type reads in an error message: ``int``, ``'auto' | bool``, ``list of str``."""
    if t is type(None):
        return "null"
    if get_origin(t) is Literal:
        return " | ".join(repr(a) for a in get_args(t))
    if _is_union(t):
        return " | ".join(type_name(a) for a in get_args(t))
    if get_origin(t) is tuple:
        args = get_args(t)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_name(args[0])}"
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if get_origin(t) in (Mapping, dict):
        return "mapping"
    if attrs.has(t) or t is Any:
        return "mapping" if attrs.has(t) else "any value"
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return " | ".join(m.name for m in t)
    return getattr(t, "__name__", str(t))


def _is_union(t: Any) -> bool:
    return get_origin(t) in (Union, types.UnionType)


# --- strict scalar hooks --------------------------------------------------------------------------


def _int(v: Any, _: type) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise Mismatch("int", v)


def _float(v: Any, _: type) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            return float(v)
        except ValueError:
            pass
    raise Mismatch("float", v)


def _bool(v: Any, _: type) -> bool:
    if isinstance(v, bool):
        return v
    raise Mismatch("bool", v)


def _str(v: Any, _: type) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)  # `experiment_name: 2024` means the name "2024"
    raise Mismatch("str", v)


def _enum(v: Any, t: type[enum.Enum]) -> enum.Enum:
    if isinstance(v, t):
        return v
    if isinstance(v, str):
        for member in t:
            if v.upper() == member.name or v == member.value:
                return member
    raise Mismatch(type_name(t), v)


def _literal(v: Any, t: Any) -> Any:
    for choice in get_args(t):
        # `precision: 16` must not match True/1.0 by ==; compare types too.
        if v == choice and type(v) is type(choice):
            return choice
    raise Mismatch(type_name(t), v)


# --- hook factories for generics ------------------------------------------------------------------


def _union_hook(t: Any) -> Any:
    members = get_args(t)

    others = [m for m in members if m is not type(None)]
    tables = [m for m in others if attrs.has(m) or get_origin(m) in (Mapping, dict)]
    lists = [m for m in others if get_origin(m) in (tuple, list) or m in (tuple, list)]
    # A scalar tries the scalar members first: `class_weight: 1.0` against
    # `list[float] | float` is 1.0, not the one-item list a list member would make of it.
    scalars_first = [m for m in others if m not in lists] + lists

    def structure(v: Any, _: Any) -> Any:
        if v is None and type(None) in members:
            return None
        # One candidate: let its detailed errors (key paths inside it) through.
        if len(others) == 1:
            return converter.structure(v, others[0])
        if isinstance(v, Mapping) and len(tables) == 1:
            return converter.structure(v, tables[0])
        if isinstance(v, (list, tuple)) and len(lists) == 1:
            return converter.structure(v, lists[0])
        for m in others if isinstance(v, (list, tuple)) else scalars_first:
            try:
                return converter.structure(v, m)
            except (Mismatch, ClassValidationError, IterableValidationError):
                continue
        # `expected int, got 'ten'` reads better than `expected int | null` for Optional[int]
        raise Mismatch(" | ".join(type_name(m) for m in members if m is not type(None)), v)

    return structure


def _tuple_hook(t: Any) -> Any:
    args = get_args(t)
    homogeneous = len(args) == 2 and args[1] is Ellipsis

    def structure(v: Any, _: Any) -> tuple:
        if v is None and homogeneous:
            return ()
        if homogeneous and isinstance(v, (str, int, float)) and not attrs.has(args[0]):
            v = [v]  # `exclude_keys: head.linear.3` (the spec writes a scalar) means one item
        if not isinstance(v, (list, tuple)) or (not homogeneous and len(v) != len(args)):
            raise Mismatch(type_name(t), v)
        out, errors = [], []
        for i, x in enumerate(v):
            item = args[0] if homogeneous else args[i]
            try:
                out.append(converter.structure(x, item))
            except Exception as exc:
                exc.add_note(IterableValidationNote(f"@ index {i}", i, item))
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"in {type_name(t)}", errors, t)
        return tuple(out)

    return structure


def _list_hook(t: Any) -> Any:
    """A YAML list as a Python list, strictly (a string is not a list of characters)."""
    items = tuple[get_args(t)[0] if get_args(t) else Any, ...]  # type: ignore[misc]
    as_tuple = _tuple_hook(items)

    def structure(v: Any, _: Any) -> list:
        return list(as_tuple(v, items))

    return structure


def _mapping_hook(t: Any) -> Any:
    args = get_args(t)
    value_type = args[1] if args else Any

    def structure(v: Any, _: Any) -> dict:
        if v is None:
            return {}
        if not isinstance(v, Mapping):
            raise Mismatch("mapping", v)
        if value_type is Any:
            return dict(v)
        out, errors = {}, []
        for k, x in v.items():
            try:
                out[str(k)] = converter.structure(x, value_type)
            except Exception as exc:
                exc.add_note(IterableValidationNote(f"@ key {k}", str(k), value_type))
                errors.append(exc)
        if errors:
            raise IterableValidationError("in mapping", errors, t)
        return out

    return structure


def _attrs_hook(cl: type) -> Any:
    inner = make_dict_structure_fn(
        cl, converter, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=True
    )

    def structure(v: Any, _: Any) -> Any:
        if v is None:
            v = {}  # an empty YAML section (`trainer:`) means "all defaults"
        if not isinstance(v, Mapping):
            raise Mismatch("a mapping", v)
        return inner(v, cl)

    return structure


def _build_converter() -> cattrs.Converter:
    c = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    for t, fn in ((int, _int), (float, _float), (bool, _bool), (str, _str)):
        c.register_structure_hook(t, fn)
    c.register_structure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, enum.Enum), _enum
    )
    c.register_unstructure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, enum.Enum), lambda e: e.name
    )
    c.register_structure_hook_func(lambda t: get_origin(t) is Literal, _literal)
    c.register_structure_hook_factory(_is_union, _union_hook)
    c.register_structure_hook_factory(lambda t: get_origin(t) is tuple, _tuple_hook)
    c.register_structure_hook_factory(lambda t: t is list or get_origin(t) is list, _list_hook)
    c.register_structure_hook_factory(
        lambda t: t is Mapping or get_origin(t) in (Mapping, dict), _mapping_hook
    )
    c.register_structure_hook_factory(attrs.has, _attrs_hook)
    return c


converter = _build_converter()


# --- errors with key paths ------------------------------------------------------------------------


def _child_path(path: str, exc: BaseException) -> str:
    for note in getattr(exc, "__notes__", ()):
        key = getattr(note, "name", None)
        if key is None:
            key = getattr(note, "index", None)
        if key is not None:
            return f"{path}.{key}" if path else str(key)
    return path


# Keys of TorchOk's 2022 pre-release format (its tests/base_tests/constructor/configs), which
# no released TorchOk accepted either: where each went.
_MOVED = {
    ("Experiment", "log_dir"): "logger.log_dir",
    ("Experiment", "experiment_name"): "logger.experiment_name",
    ("Experiment", "checkpoint"): "the params of a ModelCheckpoint entry in callbacks",
    ("Trainer", "gpus"): "trainer.devices (with accelerator: gpu)",
    **{("Dataset", k): f"dataset.params.{k}" for k in ("data_folder", "annotation_path",
                                                       "num_classes", "csv_path", "train")},
}  # fmt: skip


def _unknown_key(cl: type, key: str, known: list[str]) -> str:
    what = vars(cl).get("__okc_component__")  # a component's params (okc.config.params)
    if what is not None:
        if key in getattr(cl, "__okc_injected__", ()):
            return f"okc sets '{key}' of {what} itself; remove it"
        return f"{what} has no parameter '{key}'" + did_you_mean(key, known)
    moved = _MOVED.get((cl.__name__, key))
    if moved:
        return f"unknown key (an early TorchOk format; it is {moved} now)"
    hint = did_you_mean(key, known)
    if not hint and len(known) <= 3:  # a small class: name its keys
        hint = "; use " + " or ".join(known)
    return "unknown key" + hint


def config_errors(exc: BaseException, path: str = "") -> list[ConfigError]:
    """Flatten a cattrs exception group into one ``ConfigError`` per problem."""
    if isinstance(exc, ConfigErrors):  # a nested Params class' own structuring
        return [e.under(path) for e in exc.errors]
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [a.name for a in attrs.fields(exc.cl)]
        return [
            ConfigError(f"{path}.{k}" if path else k, _unknown_key(exc.cl, k, known))
            for k in sorted(exc.extra_fields)
        ]
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        out: list[ConfigError] = []
        what = vars(getattr(exc, "cl", object)).get("__okc_component__")
        for sub in exc.exceptions:
            if what is not None and type(sub) is KeyError:
                name = _child_path("", sub)
                out.append(ConfigError(path, f"{what} needs '{name}', which is not set"))
            else:
                out.extend(config_errors(sub, _child_path(path, sub)))
        # the config's keys first, then what the section as a whole lacks (a missing key)
        return sorted(out, key=lambda e: e.path == path) if what is not None else out
    if isinstance(exc, ParamError):  # a cross-field rule of a Params class
        return [ConfigError(join(path, exc.key), exc.message)]
    if isinstance(exc, KeyError) and not isinstance(exc, ConfigError):
        return [ConfigError(path, "required key is missing")]
    if isinstance(exc, ConfigError):
        return [exc.under(path)]
    return [ConfigError(path, str(exc))]


def structure(data: Any, cl: type[T]) -> T:
    """Structure plain data into ``cl``; raises ``ConfigErrors`` naming every bad key path
    (relative to ``data``; the caller places them with ``okc.errors.at``)."""
    try:
        return converter.structure(data, cl)
    except (ClassValidationError, IterableValidationError, Mismatch, ParamError) as exc:
        raise ConfigErrors(config_errors(exc)) from None


def unstructure(obj: Any) -> Any:
    return converter.unstructure(obj)
