"""Collate samples (dicts of tensors and scalars) into one batch dict.

Tensors of the same shape are stacked; a dataset's ``ragged_keys`` (per-sample tensors whose first
dim varies: boxes and their labels) stay a list with one tensor per sample. Declaring them, rather
than guessing from shapes, keeps a key's type the same in every batch: a batch whose images happen
to hold the same number of boxes must not stack them when the next batch cannot.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch

from okc.errors import OkcError


def collate(
    samples: Sequence[dict[str, Any]], *, ragged_keys: Collection[str] = ()
) -> dict[str, Any]:
    """Stack tensors, keep ``ragged_keys`` as lists, turn numbers into tensors, list the rest."""
    if not samples:
        return {}
    batch: dict[str, Any] = {}
    for key, first in samples[0].items():
        values = [s[key] for s in samples]
        if key in ragged_keys:
            batch[key] = values
        elif isinstance(first, torch.Tensor):
            batch[key] = _stack(key, values)
        elif isinstance(first, (bool, int, float)):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch


def _stack(key: str, values: list[torch.Tensor]) -> torch.Tensor:
    try:
        return torch.stack(values)
    except RuntimeError:
        shapes = sorted({tuple(v.shape) for v in values})
        if len(shapes) == 1:
            raise
        hint = (
            " (add Resize or CenterCrop to the dataset's transform)"
            if key == "image"
            else " (a dataset whose samples hold a varying number of items lists the key in "
            "ragged_keys)"
        )
        raise OkcError(
            f"cannot batch '{key}': samples have different shapes {shapes[:3]}{hint}"
        ) from None
