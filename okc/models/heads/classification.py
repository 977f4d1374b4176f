"""Linear heads over pooled embeddings: class logits, or a projected (optionally unit) embedding."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from okc.errors import ParamError


class LinearHead(nn.Module):
    """Dropout → Linear projection of an embedding, L2-normalised when ``normalize`` is set."""

    input_kind: ClassVar[Literal["vector", "map"]] = "vector"

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        drop_rate: float = 0.0,
        bias: bool = True,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if out_channels < 1:
            raise ParamError("out_channels", f"must be at least 1, got {out_channels}")
        if not 0.0 <= drop_rate < 1.0:
            raise ParamError("drop_rate", f"must be in [0, 1), got {drop_rate}")
        self.normalize = normalize
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_channels, out_channels, bias=bias)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        x = self.fc(self.dropout(x))
        return F.normalize(x, dim=1) if self.normalize else x


class ClassificationHead(LinearHead):
    """Dropout → Linear. With ``num_classes: 1`` the logits are (N,), as binary losses expect.

    The dropout parameter is ``drop_rate`` only (TorchOk's name, as in timm); no ``dropout`` alias,
    so that one config cannot say the same thing two ways.
    """

    def __init__(
        self, *, in_channels: int, num_classes: int, drop_rate: float = 0.0, bias: bool = True
    ) -> None:
        if num_classes < 1:
            raise ParamError("num_classes", f"must be at least 1, got {num_classes}")
        super().__init__(
            in_channels=in_channels, out_channels=num_classes, drop_rate=drop_rate, bias=bias
        )
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.fc(self.dropout(x))
        return logits.squeeze(1) if self.num_classes == 1 else logits
