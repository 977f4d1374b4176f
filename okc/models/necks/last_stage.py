"""What a model without a neck uses: the backbone's deepest stage map."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LastStage(nn.Module):
    """The deepest stage map, so that "no neck" still states ``out_channels`` and ``out_stride``."""

    def __init__(self, *, in_channels: Sequence[int], in_strides: Sequence[int]) -> None:
        super().__init__()
        self.out_channels = int(in_channels[-1])
        self.out_stride = int(in_strides[-1])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return features[-1]
