"""Turn what a metric's ``compute()`` returns into loggable scalars.

TorchOk raised on anything but a scalar or a dict of scalars, after a whole epoch had run. okc logs
what a scalar logger can show and warns, once per metric, about the rest:

- a 0-d tensor or a number: ``name``;
- a 1-d tensor (per-class values, ``average: none``): ``name_0``, ``name_1``, ...;
- a dict (``MeanAveragePrecision``): each entry as ``name_key``, by the same rules;
- matrices (``ConfusionMatrix``), curves (tuples from ``ROC``) and other objects: not logged, since
  no scalar logger can show them, with a warning; ``MetricsManager.unlogged`` keeps the latest
  value of each for callbacks (plots, reports).

Scalars stay tensors (on the metric's device) so that logging decides when to sync with the host.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import torch

Loggable = float | torch.Tensor


def flatten(name: str, value: Any) -> tuple[dict[str, Loggable], dict[str, Any]]:
    """``(scalars by log name, the parts that cannot be logged by name)``."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.ndim == 0:
            return {name: value}, {}
        if value.ndim == 1:
            return {f"{name}_{i}": v for i, v in enumerate(value.unbind())}, {}
        return {}, {name: value}
    if isinstance(value, (numbers.Number, bool)) and not isinstance(value, complex):
        return {name: float(value)}, {}
    if isinstance(value, Mapping):
        found: dict[str, Loggable] = {}
        skipped: dict[str, Any] = {}
        for key, part in value.items():
            more, missed = flatten(f"{name}_{key}", part)
            found.update(more)
            skipped.update(missed)
        return found, skipped
    return {}, {name: value}


def describe(value: Any) -> str:
    """``a (3, 3) tensor``, ``a tuple``: what a value that was not logged is."""
    if isinstance(value, torch.Tensor):
        return f"a {tuple(value.shape)} tensor"
    return f"a {type(value).__name__}"
