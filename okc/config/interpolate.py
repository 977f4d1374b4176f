"""OmegaConf-style interpolation on plain data, resolved once at load time.

Supported: ``${env:NAME}`` and TorchOk's ``${oc.env:NAME}`` (an optional default after a comma),
``${now:%Y-%m-%d}`` (one instant per load, like Hydra's cached ``now``), and references to other
keys, absolute (``${logger.log_dir}``) or relative to the containing node (``${.sibling}``). A
string that is exactly one reference keeps the referenced value's type (``${trainer.max_epochs}``
is an int).
``\\${`` escapes a literal ``${``.

Where okc and OmegaConf could differ, okc follows OmegaConf, checked case by case against it in
tests/test_interpolate_omegaconf.py (backslash runs before ``${``, quoted ``oc.env`` defaults,
relative references that climb above the root). okc's deliberate differences are listed in that
test's table: a typed ``oc.env`` default, only the resolvers above, clearer errors.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Any

from okc.config.overrides import parse_value
from okc.errors import ConfigError

_MISSING = object()


def resolve(data: Any, *, now: dt.datetime | None = None) -> Any:
    """A copy of ``data`` with every interpolation replaced by its value."""
    return _Resolver(data, now or dt.datetime.now()).node(data, ())


def _dotted(parts: tuple) -> str:
    return ".".join(str(p) for p in parts)


def _split_top(body: str, sep: str) -> list[str]:
    """Split on ``sep`` outside nested ``${...}``, ``[...]``, ``{...}`` and quotes: as in
    OmegaConf's grammar, ``'a,b'`` and ``[1,2]`` are each one argument."""
    out, depth, cur, quote = [], 0, "", ""
    for ch in body:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}" and depth:
            depth -= 1
        elif ch == sep and not depth:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    out.append(cur)
    return out


def _find_close(s: str, start: int) -> int:
    """Index of the ``}`` closing the ``${`` that starts at ``start``, or -1."""
    depth, i = 0, start
    while i < len(s):
        if s.startswith("${", i):
            depth += 1
            i += 2
            continue
        if s[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


class _Resolver:
    def __init__(self, root: Any, now: dt.datetime) -> None:
        self.root = root
        self.now = now
        self.active: list[tuple] = []  # key paths being resolved, for cycle detection

    def node(self, value: Any, path: tuple) -> Any:
        if isinstance(value, Mapping):
            return {k: self.node(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.node(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            return self.string(value, path)
        return value

    def string(self, s: str, path: tuple) -> Any:
        r"""Resolve the interpolations in ``s``.

        As in OmegaConf, backslashes count only in a run right before ``${``: there each pair is
        one backslash, and an odd one left over escapes the ``${`` (``\\${a}`` is a backslash then
        the value of ``a``; ``\${a}`` is the text ``${a}``). Anywhere else they are kept as written.
        """
        pieces: list[Any] = []
        i = 0
        while i < len(s):
            if s[i] == "\\":
                j = i
                while j < len(s) and s[j] == "\\":
                    j += 1
                if not s.startswith("${", j):
                    pieces.append(s[i:j])
                    i = j
                    continue
                pairs, escaped = divmod(j - i, 2)
                if pairs:
                    pieces.append("\\" * pairs)
                if escaped:
                    pieces.append("${")
                    i = j + 2
                else:
                    i = j
            elif s.startswith("${", i):
                end = _find_close(s, i)
                if end < 0:
                    raise ConfigError(_dotted(path), f"unterminated interpolation in {s!r}")
                pieces.append(self.expression(s[i + 2 : end], path))
                i = end + 1
            else:
                j = i
                while j < len(s) and s[j] != "\\" and not s.startswith("${", j):
                    j += 1
                pieces.append(s[i:j])
                i = j
        if len(pieces) == 1:
            return pieces[0]
        return "".join(str(p) for p in pieces)

    def expression(self, body: str, path: tuple) -> Any:
        head, colon, arg = body.partition(":")
        if colon and not head.startswith("."):
            resolver = head.strip()
            if resolver in ("env", "oc.env"):
                return self.env(arg, path, resolver=resolver)
            if resolver == "now":
                return self.now.strftime(self.string(arg, path))
            raise ConfigError(
                _dotted(path),
                f"unknown resolver '{resolver}' in ${{{body}}} (okc knows env, oc.env and now)",
            )
        return self.reference(self.string(body, path).strip(), path)

    def env(self, arg: str, path: tuple, *, resolver: str) -> Any:
        name, *default = _split_top(arg, ",")
        name = str(self.string(name.strip(), path))
        if len(default) > 1:  # OmegaConf passes each unquoted comma's piece as another argument
            raise ConfigError(
                _dotted(path),
                f"${{{resolver}:{arg}}} has more than one default; quote a default that holds "
                f"a comma: ${{{resolver}:{name},'a,b'}}",
            )
        value = os.environ.get(name)
        if value is not None:
            return value
        if default:  # a YAML scalar: `${oc.env:X,null}` is None (OmegaConf: str() of non-null)
            value = self.string(default[0].strip(), path)
            return parse_value(value) if isinstance(value, str) else value
        raise ConfigError(
            _dotted(path),
            f"environment variable {name} is not set (used as ${{{resolver}:{name}}}); set it, "
            f"or give a default: ${{{resolver}:{name},value}}",
        )

    def reference(self, ref: str, path: tuple) -> Any:
        if ref.startswith("."):
            dots = len(ref) - len(ref.lstrip("."))
            if dots > len(path):  # OmegaConf refuses to climb above the root; so does okc
                raise ConfigError(
                    _dotted(path),
                    f"interpolation ${{{ref}}}: {dots} dots climb above the top of the config "
                    f"(from '{_dotted(path)}', at most {len(path)})",
                )
            base = path[: len(path) - dots]
            parts = (*base, *ref.lstrip(".").split("."))
        else:
            parts = tuple(ref.split("."))
        value = self.lookup(parts)
        if value is _MISSING:
            raise ConfigError(_dotted(path), f"interpolation ${{{ref}}}: no key '{_dotted(parts)}'")
        if parts in self.active:
            cycle = " -> ".join(_dotted(p) for p in [*self.active, parts])
            raise ConfigError(_dotted(path), f"interpolation cycle: {cycle}")
        self.active.append(parts)
        try:
            return self.node(value, parts)
        finally:
            self.active.pop()

    def lookup(self, parts: tuple) -> Any:
        node = self.root
        for p in parts:
            if isinstance(node, Mapping) and p in node:
                node = node[p]
            elif (
                isinstance(node, list)
                and str(p).lstrip("-").isdigit()
                and -len(node) <= int(p) < len(node)
            ):
                node = node[int(p)]
            else:
                return _MISSING
        return node
