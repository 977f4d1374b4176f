"""One registry mechanism for every kind of component.

A registry maps a name used in experiment files (``resnet18``, ``CrossEntropyLoss``, ``Accuracy``)
to the class or factory that builds it. Built-in components register themselves with the decorator
when their module is imported; each registry imports its modules lazily on first lookup, so
``okc check`` stays fast and a module that has not been written yet contributes no names.
Fallbacks make whole libraries available by name (``torch.nn`` losses, ``torch.optim``,
``torchmetrics``, ``timm``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar, overload

import attrs

from okc.errors import OkcError, did_you_mean

T = TypeVar("T")


class UnknownNameError(OkcError, KeyError):
    """A name that no registry entry or fallback knows."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@attrs.frozen
class Fallback:
    """A library searched when a name is not registered.

    ``lookup`` and ``names`` are ``"module:function"`` strings, imported on first use so that
    registries do not import torch, timm or torchmetrics until a lookup needs them.
    """

    source: str
    lookup: str
    names: str

    def _fn(self, ref: str) -> Callable[..., Any] | None:
        module, _, attr = ref.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as err:  # the providing okc module is not written yet
            if err.name is None or not module.startswith(err.name):
                raise
            return None

    def get(self, name: str) -> Any | None:
        fn = self._fn(self.lookup)
        return fn(name) if fn else None

    def all_names(self) -> Iterable[str]:
        fn = self._fn(self.names)
        return fn() if fn else ()


class Registry:
    """Name → component, with lazy module loading and library fallbacks."""

    def __init__(
        self,
        kind: str,
        *,
        item: str | None = None,
        modules: Sequence[str] = (),
        fallbacks: Sequence[Fallback] = (),
    ) -> None:
        self.kind = kind
        self.item = item or kind.removesuffix("s")  # one of them, for messages
        self._modules = list(modules)
        self._fallbacks = list(fallbacks)
        self._entries: dict[str, Any] = {}
        self._loaded = False

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} registered)"

    @overload
    def register(self, obj: T, *, name: str | None = None, override: bool = False) -> T: ...
    @overload
    def register(
        self, obj: None = None, *, name: str | None = None, override: bool = False
    ) -> Callable[[T], T]: ...
    def register(self, obj=None, *, name=None, override=False):
        """Register ``obj`` under ``name`` (default ``obj.__name__``); usable as a decorator.

        A taken name raises unless ``override=True``, which lets users replace a built-in.
        """

        def add(o: T) -> T:
            key = name or o.__name__
            if key in self._entries and self._entries[key] is not o and not override:
                raise ValueError(
                    f"{self.kind}: '{key}' is already registered by {_where(self._entries[key])}; "
                    "pass override=True to replace it"
                )
            self._entries[key] = o
            return o

        return add if obj is None else add(obj)

    def add_module(self, module: str) -> None:
        """Also import ``module`` (a user package of components) before the next lookup."""
        self._modules.append(module)
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._modules:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as err:
                # A built-in module that does not exist yet contributes nothing; a module that
                # exists but fails to import is a bug and must surface.
                if err.name is None or not module.startswith(err.name):
                    raise

    def registered(self) -> list[str]:
        """Names registered directly (no fallbacks), sorted."""
        self._load()
        return sorted(self._entries)

    def names(self) -> list[str]:
        """Every name this registry resolves, fallbacks included."""
        names = set(self.registered())
        for fb in self._fallbacks:
            names.update(fb.all_names())
        return sorted(names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.registered())

    def find(self, name: str) -> Any | None:
        """The component called ``name``, or None."""
        self._load()
        if name in self._entries:
            return self._entries[name]
        for fb in self._fallbacks:
            found = fb.get(name)
            if found is not None:
                return found
        return None

    def get(self, name: str) -> Any:
        """The component called ``name``; an unknown name raises with the closest known names."""
        found = self.find(name)
        if found is None:
            raise UnknownNameError(self.unknown_message(name))
        return found

    def unknown_message(self, name: str) -> str:
        hint = did_you_mean(name, self.names())
        if not hint:
            known = self.registered()
            sources = [fb.source for fb in self._fallbacks]
            if known or sources:
                listed = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
                where = " and ".join(filter(None, [listed, *(f"any {s} name" for s in sources)]))
                hint = f"; known: {where}"
            else:
                hint = "; nothing is registered for this kind yet"
        return f"unknown {self.item} '{name}'{hint}"


def _where(obj: Any) -> str:
    module = inspect.getmodule(obj)
    return f"{module.__name__ if module else '?'}.{getattr(obj, '__qualname__', obj)}"


# --- fallback lookups (imported lazily through Fallback strings) ---------------------------------


def _public_classes(module: Any, base: type) -> dict[str, type]:
    return {
        n: c
        for n, c in vars(module).items()
        if not n.startswith("_") and inspect.isclass(c) and issubclass(c, base) and c is not base
    }


def _torch_losses() -> dict[str, type]:
    import torch.nn as nn

    return {n: c for n, c in _public_classes(nn, nn.Module).items() if n.endswith("Loss")}


def torch_loss(name: str) -> Any | None:
    return _torch_losses().get(name)


def torch_loss_names() -> list[str]:
    return list(_torch_losses())


def _torch_optimizers() -> dict[str, type]:
    import torch.optim as optim

    return _public_classes(optim, optim.Optimizer)


def torch_optimizer(name: str) -> Any | None:
    return _torch_optimizers().get(name)


def torch_optimizer_names() -> list[str]:
    return list(_torch_optimizers())


def _torch_schedulers() -> dict[str, type]:
    from torch.optim import lr_scheduler as sch

    found = _public_classes(sch, sch.LRScheduler)
    found["ReduceLROnPlateau"] = sch.ReduceLROnPlateau
    for helper in ("SequentialLR", "ChainedScheduler"):  # need scheduler objects, not config
        found.pop(helper, None)
    return found


def torch_scheduler(name: str) -> Any | None:
    return _torch_schedulers().get(name)


def torch_scheduler_names() -> list[str]:
    return list(_torch_schedulers())


def _torchmetrics() -> dict[str, type]:
    import torchmetrics
    import torchmetrics.classification
    import torchmetrics.regression

    found: dict[str, type] = {}
    for module in (torchmetrics.regression, torchmetrics.classification, torchmetrics):
        found.update(_public_classes(module, torchmetrics.Metric))
    for wrapper in ("MetricCollection", "MetricTracker", "MultioutputWrapper"):
        found.pop(wrapper, None)
    return found


def torchmetrics_metric(name: str) -> Any | None:
    return _torchmetrics().get(name)


def torchmetrics_names() -> list[str]:
    return list(_torchmetrics())


# --- the registries -------------------------------------------------------------------------------

_R = "okc.registry:"

TASKS = Registry("tasks", modules=["okc.tasks"])
BACKBONES = Registry(
    "backbones",
    modules=["okc.models.backbones"],
    fallbacks=[
        Fallback("timm", "okc.models.backbones:timm_lookup", "okc.models.backbones:timm_names")
    ],
)
NECKS = Registry("necks", modules=["okc.models.necks"])
# Detection necks and heads take and give a list of maps (one per pyramid level), a contract of
# their own (TorchOk kept a separate DETECTION_NECKS registry for it; okc also keeps the heads apart
# so a classification head is never looked up as a detection head, nor the other way round).
DETECTION_NECKS = Registry(
    "detection_necks", item="detection neck", modules=["okc.models.detection"]
)
DETECTION_HEADS = Registry(
    "detection_heads", item="detection head", modules=["okc.models.detection"]
)
POOLINGS = Registry("poolings", modules=["okc.models.poolings"])
HEADS = Registry("heads", modules=["okc.models.heads"])
LOSSES = Registry(
    "losses",
    item="loss",
    modules=["okc.losses"],
    fallbacks=[Fallback("torch.nn", _R + "torch_loss", _R + "torch_loss_names")],
)
METRICS = Registry(
    "metrics",
    modules=["okc.metrics"],
    fallbacks=[Fallback("torchmetrics", _R + "torchmetrics_metric", _R + "torchmetrics_names")],
)
DATASETS = Registry("datasets", modules=["okc.data.datasets"])
AUGMENTATIONS = Registry(
    "augmentations",
    modules=["okc.data.augment"],
    fallbacks=[
        Fallback("kornia", "okc.data.augment:kornia_lookup", "okc.data.augment:kornia_names")
    ],
)
SAMPLERS = Registry("samplers", modules=["okc.data.samplers"])
CALLBACKS = Registry("callbacks", modules=["okc.callbacks"])
LOGGERS = Registry("loggers", modules=["okc.loggers"])
OPTIMIZERS = Registry(
    "optimizers",
    modules=["okc.optim"],
    fallbacks=[Fallback("torch.optim", _R + "torch_optimizer", _R + "torch_optimizer_names")],
)
SCHEDULERS = Registry(
    "schedulers",
    modules=["okc.optim"],
    fallbacks=[
        Fallback("torch.optim.lr_scheduler", _R + "torch_scheduler", _R + "torch_scheduler_names")
    ],
)

REGISTRIES: dict[str, Registry] = {
    r.kind: r
    for r in (
        TASKS, BACKBONES, NECKS, POOLINGS, HEADS, LOSSES, METRICS, DATASETS, AUGMENTATIONS,
        SAMPLERS, CALLBACKS, LOGGERS, OPTIMIZERS, SCHEDULERS, DETECTION_NECKS, DETECTION_HEADS,
    )
}  # fmt: skip
