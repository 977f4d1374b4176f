"""``BCEWithLogitsLoss`` as TorchOk registered it: config-friendly weights and an ignore index.

The name deliberately shadows ``torch.nn.BCEWithLogitsLoss``, as it did in TorchOk, so TorchOk
configs (``pos_weight: [1.0, 3.0]`` or a JSON file) keep working. It stays a subclass and a strict
superset: with no target equal to ``ignore_index`` (default -1, never a valid BCE target) it returns
exactly what torch's loss returns. Ignored elements are masked rather than filtered out (TorchOk
indexed them away), which keeps shapes static for ``torch.compile``, keeps ``weight`` and
``pos_weight`` broadcasting, and keeps ``reduction='none'`` shaped like the input; ``mean`` divides
by the number of kept elements and is 0 when nothing is kept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from okc.registry import LOSSES


@LOSSES.register(name="BCEWithLogitsLoss")
class BCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """Binary cross-entropy on logits; targets equal to ``ignore_index`` add nothing."""

    def __init__(
        self,
        *,
        weight: torch.Tensor | Sequence[float] | None = None,
        reduction: Literal["none", "mean", "sum"] = "mean",
        pos_weight: torch.Tensor | Sequence[float] | str | None = None,
        ignore_index: int | None = -1,
    ) -> None:
        super().__init__(
            weight=_as_tensor(weight), reduction=reduction, pos_weight=_pos_weight(pos_weight)
        )
        self.ignore_index = ignore_index

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(input.dtype)
        if self.ignore_index is None:
            return F.binary_cross_entropy_with_logits(
                input, target, self.weight, pos_weight=self.pos_weight, reduction=self.reduction
            )
        keep = target != self.ignore_index
        loss = F.binary_cross_entropy_with_logits(
            input, target, self.weight, pos_weight=self.pos_weight, reduction="none"
        )
        loss = torch.where(keep, loss, torch.zeros_like(loss))
        if self.reduction == "none":
            return loss
        if self.reduction == "sum":
            return loss.sum()
        return loss.sum() / keep.sum().clamp_min(1)


def _as_tensor(value: torch.Tensor | Sequence[float] | None) -> torch.Tensor | None:
    if value is None or isinstance(value, torch.Tensor):
        return value
    return torch.tensor(value, dtype=torch.float)


def _pos_weight(value: torch.Tensor | Sequence[float] | str | None) -> torch.Tensor | None:
    """A list, or a JSON file holding a list or ``{class index: weight}`` (unlisted classes: 1)."""
    if not isinstance(value, str):
        return _as_tensor(value)
    try:
        data = json.loads(Path(value).expanduser().read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"pos_weight: cannot read '{value}': {err}") from err
    if isinstance(data, list):
        return _as_tensor(data)
    weights = torch.ones(max(int(k) for k in data) + 1)
    for k, v in data.items():
        weights[int(k)] = float(v)
    return weights
