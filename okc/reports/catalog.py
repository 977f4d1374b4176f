"""``okc list``: which names each registry resolves, with a line about each and its params.

okc's own components (and those of modules an experiment ``imports``) come with the first
sentence of their docstring and the params of their signature, minus those okc computes and
passes itself (a head's ``in_channels``, a logger's ``run_dir``, a scheduler's ``optimizer``).
Library fallbacks (any timm model, torch.nn loss, torchmetrics metric, Kornia op, torch.optim
optimizer and scheduler) are thousands of names: they are listed by name when a pattern is given
or ``library=True``, and otherwise counted.
"""

from __future__ import annotations

import fnmatch
import inspect
import sys
from collections.abc import Callable
from typing import Any

import attrs

from okc.config.params import declared
from okc.errors import OkcError, did_you_mean
from okc.registry import REGISTRIES, Registry

# Params okc fills in itself when it builds a component of a kind (never set in a config).
COMPUTED: dict[str, frozenset[str]] = {
    "necks": frozenset({"in_channels", "in_strides"}),
    "detection_necks": frozenset({"in_channels", "in_strides"}),
    "poolings": frozenset({"in_channels"}),
    "heads": frozenset({"in_channels"}),
    "detection_heads": frozenset({"in_channels", "in_strides"}),
    "loggers": frozenset({"run_dir", "log_dir", "hyperparams"}),
    "schedulers": frozenset({"optimizer"}),
    "optimizers": frozenset({"params"}),
}


@attrs.frozen
class ComponentInfo:
    """One name a registry resolves: where it comes from, what it is, what it takes."""

    name: str
    kind: str
    source: str  # "okc", a user module, or the library a fallback reaches ("timm", ...)
    description: str = ""
    params: tuple[str, ...] = ()  # "num_classes" (required), "drop_rate=0.0"


@attrs.frozen
class Listing:
    kind: str
    components: tuple[ComponentInfo, ...]
    # library → how many of its names the registry also resolves (listed or not)
    libraries: dict[str, int]
    library_listed: bool


def kinds() -> list[str]:
    """Every registry kind, as ``okc list`` spells it."""
    return sorted(REGISTRIES)


def registry(kind: str) -> Registry:
    """The registry for ``kind``: plural or singular, ``-`` or ``_`` (``detection-heads``)."""
    key = kind.strip().lower().replace("-", "_")
    for candidate in (key, f"{key}s", f"{key}es"):
        if candidate in REGISTRIES:
            return REGISTRIES[candidate]
    raise OkcError(f"unknown kind of component '{kind}'{did_you_mean(key, REGISTRIES)}; "
                   f"kinds: {', '.join(kinds())}")  # fmt: skip


def list_components(kind: str, pattern: str | None = None, *, library: bool = False) -> Listing:
    """The names of ``kind`` matching ``pattern`` (shell-style, case-insensitive: ``resnet*``).

    okc's own components always; each library's names with a pattern or ``library=True``.
    """
    reg = registry(kind)
    match = _matcher(pattern)
    own = [describe(reg, name) for name in reg.registered() if match(name)]
    libraries: dict[str, int] = {}
    listed: list[ComponentInfo] = []
    for source, names in reg.library_names().items():
        hits = sorted(n for n in names if match(n) and n not in reg.registered())
        libraries[source] = len(hits)
        if pattern is not None or library:
            listed += [ComponentInfo(n, reg.kind, source) for n in hits]
    return Listing(reg.kind, tuple(own + listed), libraries, pattern is not None or library)


def _matcher(pattern: str | None) -> Callable[[str], bool]:
    if pattern is None:
        return lambda name: True
    glob = pattern.lower() if any(c in pattern for c in "*?[") else f"*{pattern.lower()}*"
    return lambda name: fnmatch.fnmatchcase(name.lower(), glob)


def describe(reg: Registry, name: str) -> ComponentInfo:
    """A registered component's source, one-line description and params."""
    obj = reg.get(name)
    module = getattr(obj, "__module__", "") or ""
    source = "okc" if module == "okc" or module.startswith("okc.") else module
    text = description(obj)
    own_name = getattr(obj, "__name__", name)
    if own_name != name and own_name in reg.registered():
        text = f"Another name for {own_name}. {text}".strip()
    return ComponentInfo(name, reg.kind, source, text, params(obj, reg.kind))


def description(obj: Any) -> str:
    """The first sentence of the component's docstring (a class without one: its module's, when
    that module is about it), without reST markup."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if not doc and inspect.isclass(obj):
        module_doc = getattr(sys.modules.get(obj.__module__), "__doc__", None) or ""
        prefix = f"``{obj.__name__}``:"
        about_it = module_doc.startswith(prefix) or _defines_one(obj)
        doc = module_doc.removeprefix(prefix) if about_it else None
    if not doc:
        return ""
    paragraph = inspect.cleandoc(doc).split("\n\n")[0]
    text = " ".join(paragraph.split()).replace("``", "").replace("\\ ", "")
    end = text.find(". ")
    return text[: end + 1] if end >= 0 else text


def _defines_one(cls: type) -> bool:
    """Whether ``cls`` is the only public class its module defines (the module is about it)."""
    module = sys.modules.get(cls.__module__)
    own = [
        v for k, v in vars(module).items()
        if not k.startswith("_") and inspect.isclass(v) and v.__module__ == cls.__module__
    ] if module else []  # fmt: skip
    return own == [cls]


def params(obj: Any, kind: str) -> tuple[str, ...]:
    """``name`` for required params, ``name=default`` for the others; okc's computed ones out."""
    skip = COMPUTED.get(kind, frozenset())
    own = declared(obj)
    if own is not None:  # a declared Params class: its fields are the params
        return tuple(
            a.name if a.default is attrs.NOTHING else f"{a.name}={_default(a.default)!r}"
            for a in attrs.fields(own) if a.name not in skip
        )  # fmt: skip
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return ()
    out = []
    for p in signature.parameters.values():
        if p.name in skip or p.name == "self":
            continue
        if p.kind is p.VAR_KEYWORD:
            out.append(f"**{p.name}")
        elif p.kind is p.VAR_POSITIONAL:
            out.append(f"*{p.name}")
        elif p.default is p.empty:
            out.append(p.name)
        else:
            out.append(f"{p.name}={p.default!r}")
    return tuple(out)


def _default(default: Any) -> Any:
    """An attrs default as the value it gives (``{}``, not ``Factory(dict)``)."""
    return default.factory() if isinstance(default, attrs.Factory) else default  # type: ignore[arg-type]
