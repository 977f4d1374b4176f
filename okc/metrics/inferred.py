"""torchmetrics 0.x semantics for a classification metric configured with no task and no size.

TorchOk's configs name ``Accuracy``, ``F1Score``, ... with no ``task`` and often no
``num_classes``: torchmetrics 0.x read both from the data. torchmetrics 1.x needs them up front,
so okc reads them from the first batch, from shapes alone (never values, so every rank and every
run decides the same, and a shape never changes within a run):

- ``preds`` (B, C) floating with an integer ``target`` (B,): ``multiclass``, ``num_classes=C``;
- ``preds`` and ``target`` both (B, C): ``multilabel``, ``num_labels=C``;
- ``preds`` shaped like ``target`` otherwise: ``binary``.

A config that gives ``num_classes`` or ``num_labels`` gets its task from that instead, before
any batch (``okc.metrics.manager.implied_task``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from okc.errors import ConfigError, OkcError


def task_from_shapes(preds: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """The ``task`` (and size) torchmetrics 0.x would have inferred from these shapes."""
    if (
        preds.dim() == target.dim() + 1
        and preds.is_floating_point()
        and not target.is_floating_point()
    ):
        return {"task": "multiclass", "num_classes": int(preds.shape[1])}
    if preds.shape == target.shape and preds.dim() >= 2:
        return {"task": "multilabel", "num_labels": int(preds.shape[1])}
    if preds.shape == target.shape:
        return {"task": "binary"}
    raise OkcError(
        f"cannot tell the task from preds {tuple(preds.shape)} and target "
        f"{tuple(target.shape)}; set task (and num_classes) in the metric's params"
    )


class FromShapes(nn.Module):
    """A torchmetrics task wrapper (``Accuracy``...) built at its first ``update``."""

    def __init__(self, target: type, params: Mapping[str, Any]) -> None:
        """Errors are ``ConfigError``s at the metric's entry; the manager places them."""
        super().__init__()
        self.target, self.params = target, dict(params)
        self.metric: nn.Module | None = None

    def update(self, preds: torch.Tensor, target: torch.Tensor, **kwargs: Any) -> None:
        if self.metric is None:
            try:
                inferred = task_from_shapes(preds, target)
            except OkcError as err:
                raise ConfigError("", str(err)) from None
            self.metric = self.target(**inferred, **self.params).to(preds.device)
        self.metric.update(preds, target, **kwargs)

    @property
    def update_count(self) -> int:
        return 0 if self.metric is None else int(self.metric.update_count)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu") if self.metric is None else self.metric.device

    def compute(self) -> Any:
        if self.metric is None:
            raise ConfigError("", "this process saw no batch to tell the task from")
        return self.metric.compute()

    def reset(self) -> None:
        if self.metric is not None:
            self.metric.reset()
