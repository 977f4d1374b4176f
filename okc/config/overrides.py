"""Command-line overrides in Hydra's syntax, applied to plain data before interpolation.

``key.path=value`` sets (creating missing mapping keys: the schema rejects unknown ones later, with
a did-you-mean), ``+key=value`` adds a key that must not exist yet, ``++key=value`` sets either way,
``~key`` deletes. Numeric parts index lists (``data.TRAIN.0.dataloader.batch_size=64``). Values are
parsed as YAML (``64`` → int, ``[1,2]`` → list, ``null`` → None, ``'cpu'`` → str).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import Any

import yaml

from okc.config.yaml_loader import safe_load
from okc.errors import ConfigError

_KEY = re.compile(r"^[A-Za-z_][\w\-]*(\.[\w\-]+)*$")


def parse_value(text: str) -> Any:
    if text == "":
        return ""
    try:
        return safe_load(text)
    except yaml.YAMLError:
        return text  # not YAML (e.g. `a: b: c`): keep it as the string the user typed


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply each override in order to ``data`` (modified in place and returned)."""
    for item in overrides:
        _apply(data, item)
    return data


def _apply(data: dict[str, Any], item: str) -> None:
    where = f"override '{item}'"
    if item.startswith("~"):
        key, value, mode = item[1:].split("=", 1)[0], None, "delete"
    else:
        key, eq, text = item.partition("=")
        if not eq:
            raise ConfigError(where, "expected key=value (or +key=value, ~key)")
        mode = "force" if key.startswith("++") else "add" if key.startswith("+") else "set"
        key = key.lstrip("+")
        value = parse_value(text)
    if not _KEY.match(key):
        raise ConfigError(where, f"'{key}' is not a dotted key path like trainer.max_epochs")
    *parents, last = key.split(".")
    node: Any = data
    for depth, part in enumerate(parents):
        node = _step(node, part, create=mode != "delete", where=where, at=parents[: depth + 1])
    _set(node, last, value, mode=mode, where=where, key=key)


def _step(node: Any, part: str, *, create: bool, where: str, at: list[str]) -> Any:
    here = ".".join(at)
    if isinstance(node, list):
        return node[_index(node, part, where, here)]
    if isinstance(node, MutableMapping):
        if part not in node or node[part] is None:
            if not create:
                raise ConfigError(where, f"no key '{here}' to delete")
            node[part] = {}
        return node[part]
    raise ConfigError(
        where, f"'{here.rpartition('.')[0]}' is a {type(node).__name__}, not a mapping"
    )


def _index(node: list, part: str, where: str, here: str) -> int:
    if not part.lstrip("-").isdigit():
        raise ConfigError(where, f"'{here}': a list needs a numeric index, got '{part}'")
    i = int(part)
    if not -len(node) <= i < len(node):
        raise ConfigError(where, f"'{here}': index {i} out of range (the list has {len(node)})")
    return i


def _set(node: Any, last: str, value: Any, *, mode: str, where: str, key: str) -> None:
    if isinstance(node, list):
        i = _index(node, last, where, key)
        if mode == "delete":
            del node[i]
        elif mode == "add":
            raise ConfigError(where, f"'{key}' exists; use {key}=... to change it")
        else:
            node[i] = value
        return
    if not isinstance(node, MutableMapping):
        raise ConfigError(
            where, f"'{key.rpartition('.')[0]}' is a {type(node).__name__}, not a mapping"
        )
    if mode == "delete":
        if last not in node:
            raise ConfigError(where, f"no key '{key}' to delete")
        del node[last]
    elif mode == "add" and last in node:
        raise ConfigError(where, f"'{key}' exists; use {key}=... (or ++{key}=...) to change it")
    else:
        node[last] = value
