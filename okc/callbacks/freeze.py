"""``FreezeUnfreeze``: keep parts of the model frozen until an epoch (or for the whole run).

TorchOk's parameters and rules, without its bugs:

- ``freeze_modules``: a list of entries, each with ``module_name`` (a dotted path in the model:
  ``backbone``, ``backbone.body.layer1``, ``head``; ``""`` is the whole model) and optionally
  ``epoch`` (unfrozen from this epoch on, counting from 0; without it frozen for the whole run),
  ``stages`` (only the stem and the first N stages of a backbone: see
  ``TimmBackbone.get_stages``), ``module_class`` (only submodules with a class of that name in
  their MRO: ``BatchNorm2d``, ``_BatchNorm``, ``Dropout``), ``bn_requires_grad`` and
  ``bn_track_running_stats`` (what a frozen BatchNorm keeps: both false by default, so its
  weights do not train and its running statistics do not move; in training it normalises with
  the batch's statistics, as TorchOk's did).
- At every training epoch start, entries whose ``epoch`` has come are unfrozen first, then the
  others are frozen, so freezing wins where entries overlap. Within each pass entries are applied
  in ``module_name`` order (``top_down_freeze_order``: ascending, so ``backbone.layer1``'s rule
  comes after, and overrides, ``backbone``'s; false: descending).

What frozen means in okc: the parameters' ``requires_grad`` is false, so they get no gradient and
every torch optimizer skips them (no update, no weight decay, no momentum); a frozen Dropout is in
eval mode (no dropout; TorchOk's example promised this and did nothing). Unfreezing restores
``requires_grad``, BatchNorm's statistics tracking and Dropout's training mode. The optimizers
are built with every trainable parameter before the first epoch, so unfrozen parameters train at
their configured lr (TorchOk meant to add them at lr/10 but never did). With
``trainer.compile: true`` the compiled step sees the change through its guards and recompiles.
Fixes TorchOk's misspelt ``stage`` (which it ignored) by reading it as ``stages``, with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from okc.engine.hooks import Callback, RunView
from okc.errors import ConfigError, ParamError, did_you_mean
from okc.registry import CALLBACKS


@runtime_checkable
class Staged(Protocol):
    """A module that can name its stem and first stages (okc's timm backbones)."""

    def get_stages(self, num_stages: int) -> Sequence[nn.Module]: ...


def _at_least_0(entry: Any, field: attrs.Attribute, value: int | None) -> None:
    if value is not None and value < 0:
        raise ParamError(field.name, f"must be at least 0, got {value}")


@attrs.frozen(kw_only=True)
class FreezeEntry:
    """One ``freeze_modules`` item, structured by okc's converter (key paths, did-you-mean).

    ``stage`` is TorchOk's misspelling, which it ignored (freezing the whole module): okc reads it
    as ``stages``, with a warning.
    """

    __okc_component__ = "a freeze_modules entry"

    module_name: str
    epoch: int | None = attrs.field(default=None, validator=_at_least_0)
    stages: int | None = attrs.field(default=None, validator=_at_least_0)
    module_class: str | None = None
    bn_requires_grad: bool = False
    bn_track_running_stats: bool = False
    stage: int | None = attrs.field(default=None, validator=_at_least_0, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.stage is not None:
            warnings.warn(
                "freeze_modules: an entry's 'stage' is read as 'stages' (TorchOk "
                "ignored this misspelling and froze the whole module)",
                stacklevel=2,
            )
            object.__setattr__(
                self, "stages", self.stages if self.stages is not None else self.stage
            )

    def frozen_at(self, epoch: int) -> bool:
        return self.epoch is None or epoch < self.epoch


def _classes(module: nn.Module) -> set[str]:
    return {c.__name__ for c in type(module).__mro__}


def _params_own(module: nn.Module) -> Iterator[nn.Parameter]:
    return module.parameters(recurse=False)


@CALLBACKS.register
class FreezeUnfreeze(Callback):
    def __init__(
        self, *, freeze_modules: Sequence[FreezeEntry], top_down_freeze_order: bool = True
    ) -> None:
        entries = [e if isinstance(e, FreezeEntry) else FreezeEntry(**e) for e in freeze_modules]
        self._index = {id(e): i for i, e in enumerate(entries)}  # for errors: freeze_modules.<i>
        self.entries: list[FreezeEntry] = sorted(
            entries, key=lambda e: e.module_name, reverse=not top_down_freeze_order
        )
        self._targets: dict[int, list[nn.Module]] = {}  # id(entry) -> modules it governs
        self._trainable: dict[int, bool] = {}
        self._tracking: dict[int, bool] = {}
        self._warned_orphans = False

    # --- which modules ----------------------------------------------------------------------------

    def setup(self, run: RunView, stage: str) -> None:
        if stage != "fit":
            return
        if run.world_size > 1:
            raise ConfigError(
                self.config_path,
                "FreezeUnfreeze is not supported with several processes yet: DDP fixes the "
                "trainable parameters when it wraps the model",
            )
        self._targets = {id(e): self._resolve(run.model, e) for e in self.entries}
        # what "unfrozen" restores: a parameter the model itself keeps fixed stays fixed
        self._trainable = {id(p): p.requires_grad for p in run.model.parameters()}
        self._tracking = {id(m): m.track_running_stats for m in run.model.modules()
                          if isinstance(m, _BatchNorm)}  # fmt: skip

    def _where(self, entry: FreezeEntry, key: str) -> str:
        return f"{self.config_path}.freeze_modules.{self._index[id(entry)]}.{key}"

    def _resolve(self, model: nn.Module, entry: FreezeEntry) -> list[nn.Module]:
        name = entry.module_name
        try:
            module = model.get_submodule(name) if name else model
        except AttributeError:
            known = [n for n, _ in model.named_modules() if n]
            top = ", ".join(n for n, _ in model.named_children())
            hint = did_you_mean(name, known) or f"; the model's modules are {top} (and theirs)"
            raise ConfigError(self._where(entry, "module_name"),
                              f"no module '{name}' in the model{hint}") from None  # fmt: skip
        modules: list[nn.Module] = [module]
        if entry.stages is not None:
            if not isinstance(module, Staged):
                raise ConfigError(self._where(entry, "stages"),
                                  f"'{name or 'the model'}' ({type(module).__name__}) has no "
                                  "stages; stages works on backbones")  # fmt: skip
            try:
                modules = list(module.get_stages(entry.stages))
            except ParamError as err:
                raise ConfigError(self._where(entry, "stages"), err.message) from err
        if entry.module_class is not None:
            modules = self._of_class(modules, entry)
        return modules

    def _of_class(self, modules: list[nn.Module], entry: FreezeEntry) -> list[nn.Module]:
        wanted = entry.module_class
        found = [m for top in modules for m in top.modules() if wanted in _classes(m)]
        if found:
            return found
        present = {c for top in modules for m in top.modules() for c in _classes(m)}
        where = self._where(entry, "module_class")
        if hasattr(nn, wanted) or hasattr(nn.modules.batchnorm, wanted):
            warnings.warn(f"{where}: no {wanted} in '{entry.module_name}'; the entry does "
                          "nothing", stacklevel=3)  # fmt: skip
            return []
        raise ConfigError(where, f"no module of class '{wanted}' in '{entry.module_name}'"
                          + did_you_mean(wanted, present))  # fmt: skip

    # --- applying ---------------------------------------------------------------------------------

    def on_train_epoch_start(self, run: RunView) -> None:
        for entry in self.entries:
            if not entry.frozen_at(run.epoch):
                for module in self._targets[id(entry)]:
                    self._unfreeze(module)
        for entry in self.entries:
            if entry.frozen_at(run.epoch):
                for module in self._targets[id(entry)]:
                    _freeze(module, entry)
        self._check_optimizers(run)

    def _unfreeze(self, module: nn.Module) -> None:
        for m in module.modules():
            for p in _params_own(m):
                p.requires_grad_(self._trainable.get(id(p), True))
            if isinstance(m, _BatchNorm):
                m.track_running_stats = self._tracking.get(id(m), True)
            if isinstance(m, _DropoutNd):
                m.train()

    def _check_optimizers(self, run: RunView) -> None:
        """Unfrozen parameters no optimizer holds would silently never train: say so once."""
        if self._warned_orphans:
            return
        held = {id(p) for opt in run.optimizers for g in opt.param_groups for p in g["params"]}
        orphans = [n for n, p in run.model.named_parameters() if p.requires_grad
                   and id(p) not in held]  # fmt: skip
        if orphans:
            self._warned_orphans = True
            warnings.warn(
                f"{len(orphans)} parameters FreezeUnfreeze unfroze are in no optimizer (they were "
                "frozen when the optimizers were built) and do not train: "
                + ", ".join(orphans[:5]),
                stacklevel=2,
            )


def _freeze(module: nn.Module, entry: FreezeEntry) -> None:
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            for p in _params_own(m):
                p.requires_grad_(entry.bn_requires_grad)
            m.track_running_stats = entry.bn_track_running_stats
        else:
            for p in _params_own(m):
                p.requires_grad_(False)
        if isinstance(m, _DropoutNd):
            m.eval()
