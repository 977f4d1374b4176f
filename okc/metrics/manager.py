"""MetricsManager: the configured metrics per phase and data loader, fed with the task's outputs.

Behaviour follows TorchOk's manager: one fresh metric per (phase, loader index); log names are
``<phase>/<tag or name>``, with ``_dataloader_<idx>`` when a VALID/TEST metric covers several
loaders; the same log name twice in a phase is an error. Differences, each fixing a TorchOk defect:

- ``update`` detaches its inputs (list-state metrics would otherwise keep the step's autograd graph)
  and a missing output key is reported with the config path and the keys the task does produce;
- ``on_epoch_end`` skips metrics that saw no batch on any rank (no torchmetrics warnings, and no
  rank waits in a sync the others skip) and logs non-scalar results as ``okc.metrics.values`` says;
- classification metrics that torchmetrics 1.x split by ``task`` (``Accuracy``, ``F1Score``,
  ``JaccardIndex``, ...) get the ``task`` that torchmetrics 0.x configs (TorchOk's) leave out, by
  the rule torchmetrics 0.x followed: ``num_labels`` given → ``multilabel``, else ``num_classes``
  given → ``multiclass``; with neither, task and size are read from the first batch's *shapes*
  (``okc.metrics.inferred``), which are the same on every rank and every run. Values are never
  read: a guess from values could differ between ranks.

Distributed results come from torchmetrics' own sync inside ``compute()``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import attrs
import torch
from torch import nn

from okc.config.bind import entry_problems, make, mapping_problems, raise_if
from okc.config.schema import ALL_PHASES, Metric, Phase
from okc.errors import ConfigError, OkcError, at, did_you_mean, join, under
from okc.metrics.inferred import FromShapes
from okc.metrics.values import Loggable, describe, flatten
from okc.registry import METRICS
from okc.tree import map_tensors


@attrs.frozen
class Slot:
    """One metric instance's place: what it logs as and which batches feed it."""

    spec: Metric
    index: int  # in the experiment's metrics
    phase: Phase
    dataloader_idx: int
    log_name: str


def plan(specs: Sequence[Metric]) -> tuple[list[Slot], list[ConfigError]]:
    """The metric instances ``specs`` ask for, and the clashes between their log names
    (relative to the ``metrics`` section)."""
    slots: list[Slot] = []
    errors: list[ConfigError] = []
    owner: dict[tuple[Phase, str], int] = {}
    clashes: dict[tuple[int, int, str], list[str]] = {}  # (metric, earlier one, name) -> phases
    for i, spec in enumerate(specs):
        for phase in dict.fromkeys(spec.phases):
            idxs = _loader_idxs(spec, phase)
            errors += under(str(i), _idx_errors(idxs, phase))
            for idx in dict.fromkeys(idxs):
                base = spec.tag or spec.name
                log_name = f"{base}_dataloader_{idx}" if len(idxs) > 1 else base
                if (phase, log_name) in owner:
                    clashes.setdefault((i, owner[phase, log_name], log_name), []).append(phase.name)
                    continue
                owner[phase, log_name] = i
                slots.append(Slot(spec, i, phase, idx, log_name))
    for (i, earlier, log_name), phases in clashes.items():
        errors.append(
            ConfigError(
                f"{i}.tag",
                f"'{log_name}' is already logged by metrics.{earlier} (in {', '.join(phases)}); "
                "give one of them a distinct tag",
            )
        )
    return slots, errors


def check_metrics(specs: Sequence[Metric]) -> list[ConfigError]:
    """Every problem in ``specs`` found without building a metric (names, params, mappings, log
    names), relative to the ``metrics`` section.

    The one exception is torchmetrics' task-split classification metrics, which are cheap: they are
    built to find the concrete class (and its ``update`` arguments) that ``task`` selects.
    """
    errors = plan(specs)[1]
    for i, spec in enumerate(specs):
        errors += under(str(i), _metric_errors(spec))
    return errors


def _metric_errors(spec: Metric) -> list[ConfigError]:
    problems = _param_errors(spec)
    if problems:
        return problems
    target = METRICS.get(spec.name)
    update = getattr(target, "update", None)
    if _is_task_wrapper(target):
        try:
            update = _build(spec, for_check=True).update
        except OkcError as err:
            return getattr(err, "errors", [err])
    return under("mapping", mapping_problems(update, spec.mapping, spec.name)) if update else []


class MetricsManager(nn.Module):
    """The metrics of every phase; an ``nn.Module`` so metric states follow the task's device.
    Errors are placed at ``metrics.<i>``."""

    def __init__(self, specs: Sequence[Metric]) -> None:
        super().__init__()
        with at("metrics"):
            raise_if(check_metrics(specs))
            slots = plan(specs)[0]
            self._slots = {p: [s for s in slots if s.phase is p] for p in ALL_PHASES}
            self.phase_metrics = nn.ModuleDict({p.name: nn.ModuleList() for p in ALL_PHASES})
            for s in slots:
                with at(str(s.index)):
                    self.phase_metrics[s.phase.name].append(_build(s.spec))
        self._warned: set[str] = set()
        # The latest non-scalar results (confusion matrices, curves) by log name, for callbacks.
        self.unlogged: dict[str, Any] = {}

    def log_names(self, phase: Phase) -> list[str]:
        """The base log names of ``phase`` (``valid/Accuracy``), before dict/vector flattening."""
        return [f"{phase.value}/{s.log_name}" for s in self._slots[phase]]

    def update(self, phase: Phase, outputs: Mapping[str, Any], dataloader_idx: int = 0) -> None:
        """Feed one batch of task outputs to the metrics of ``phase`` for this loader."""
        for slot, metric in zip(self._slots[phase], self.phase_metrics[phase.name], strict=True):
            if slot.dataloader_idx != dataloader_idx:
                continue
            try:
                args = {arg: _detached(outputs[key]) for arg, key in slot.spec.mapping.items()}
            except KeyError:
                self.check_outputs(phase, outputs.keys())
                raise
            with at(join("metrics", slot.index)):  # FromShapes cannot tell the task
                metric.update(**args)

    def check_outputs(self, phase: Phase, keys: Collection[str]) -> None:
        """Raise a ConfigError per mapping entry of ``phase`` naming a key the task lacks."""
        available = ", ".join(sorted(keys)) or "nothing"
        raise_if(
            [
                ConfigError(
                    join("metrics", s.index, "mapping", arg),
                    f"the task's outputs have no '{key}'; it produces: {available}",
                )
                for s in {s.index: s for s in self._slots[phase]}.values()
                for arg, key in s.spec.mapping.items()
                if key not in keys
            ]
        )

    def on_epoch_end(self, phase: Phase) -> dict[str, Loggable]:
        """Compute, flatten and reset the metrics of ``phase``: ``{'valid/Accuracy': tensor}``."""
        metrics = list(self.phase_metrics[phase.name])
        results: dict[str, Loggable] = {}
        for slot, metric, updated in zip(
            self._slots[phase], metrics, _updated_anywhere(metrics), strict=True
        ):
            if updated:
                with at(join("metrics", slot.index)):
                    value = metric.compute()
                found, skipped = flatten(f"{phase.value}/{slot.log_name}", value)
                results.update(found)
                self.unlogged.update(skipped)
                self._warn_skipped(skipped)
            metric.reset()
        return results

    def _warn_skipped(self, skipped: dict[str, Any]) -> None:
        for name, value in skipped.items():
            if name not in self._warned:
                self._warned.add(name)
                warnings.warn(
                    f"metric result {name} ({describe(value)}) is not a scalar and is not logged; "
                    "callbacks find it in MetricsManager.unlogged",
                    stacklevel=3,
                )


# --- helpers --------------------------------------------------------------------------------------


def _loader_idxs(spec: Metric, phase: Phase) -> tuple[int, ...]:
    if phase is Phase.VALID:
        return spec.val_dataloader_idxs
    if phase is Phase.TEST:
        return spec.test_dataloader_idxs
    return (0,)


def _idx_errors(idxs: tuple[int, ...], phase: Phase) -> list[ConfigError]:
    key = "val_dataloader_idxs" if phase is Phase.VALID else "test_dataloader_idxs"
    if not idxs:
        return [ConfigError(key, f"lists no data loader for {phase.name}")]
    if any(i < 0 for i in idxs) or len(set(idxs)) != len(idxs):
        return [ConfigError(key, f"expected distinct indices >= 0, got {list(idxs)}")]
    return []


def _is_task_wrapper(target: Any) -> bool:
    """torchmetrics' ``Accuracy``-style classes, whose ``task`` picks the real metric class."""
    from torchmetrics.classification.base import _ClassificationTaskWrapper

    return isinstance(target, type) and issubclass(target, _ClassificationTaskWrapper)


# What ``torchmetrics.Metric.__init__`` reads from ``**kwargs`` (torchmetrics 1.x).
_METRIC_KWARGS = (
    "compute_on_cpu", "dist_sync_on_step", "process_group", "dist_sync_fn",
    "distributed_available_fn", "sync_on_compute", "compute_with_cache",
)  # fmt: skip


def _param_errors(spec: Metric) -> list[ConfigError]:
    errors = entry_problems(METRICS, spec.name, spec.params)
    target = METRICS.find(spec.name)
    if not _is_task_wrapper(target):
        return errors
    # The wrappers take **kwargs, so a misspelled key would only surface as a confusing error
    # about the parameter it was meant to set.
    known = [*inspect.signature(target).parameters, *_METRIC_KWARGS]
    for key in spec.params:
        if key not in known:
            hint = did_you_mean(key, known)
            errors.append(
                ConfigError(f"params.{key}", f"{spec.name} has no parameter '{key}'{hint}")
            )
    if "task" not in spec.params:  # read from the sizes, or from the first batch (FromShapes)
        errors = [e for e in errors if "needs 'task'" not in e.message]
    return errors


def implied_task(params: Mapping[str, Any]) -> str | None:
    """The ``task`` a torchmetrics 0.x config means when it names none (see the module doc)."""
    if "task" in params:
        return params["task"]
    if params.get("num_labels") is not None:
        return "multilabel"
    if params.get("num_classes") is not None:
        return "multiclass"
    return None


def _build(spec: Metric, *, for_check: bool = False) -> Any:
    """The metric; a task wrapper without ``task`` gets it from its size parameter, else from
    the first batch's shapes (``FromShapes``; ``for_check`` builds a multiclass stand-in, whose
    ``update`` has the signature the mapping is checked against)."""
    params = dict(spec.params)
    target = METRICS.find(spec.name)
    if "task" not in params and target is not None and _is_task_wrapper(target):
        task = implied_task(params)
        if task is None and not for_check:
            return FromShapes(target, params)
        params["task"] = task or "multiclass"
        if task is None:
            params["num_classes"] = 2
    return make(METRICS, spec.name, params)


def _detached(value: Any) -> Any:
    return map_tensors(torch.Tensor.detach, value)


def _updated_anywhere(metrics: list[Any]) -> list[bool]:
    """Whether each metric saw a batch on any rank: ranks must agree before ``compute`` syncs."""
    counts = [int(m.update_count) for m in metrics]
    dist = torch.distributed
    if metrics and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        total = torch.tensor(counts, device=metrics[0].device)
        dist.all_reduce(total)  # sync point: one small collective per phase end
        counts = total.tolist()
    return [c > 0 for c in counts]
