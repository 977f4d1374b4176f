"""Collate samples (dicts of tensors and scalars) into one batch dict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from okc.errors import OkcError


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, turn numbers into tensors, keep anything else as a list."""
    if not samples:
        return {}
    batch: dict[str, Any] = {}
    for key, first in samples[0].items():
        values = [s[key] for s in samples]
        if isinstance(first, torch.Tensor):
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
        hint = " (add Resize or CenterCrop to the dataset's transform)" if key == "image" else ""
        raise OkcError(
            f"cannot batch '{key}': samples have different shapes {shapes[:3]}{hint}"
        ) from None
