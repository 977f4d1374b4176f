"""PoolingLinear: a global pooling followed by a linear projection (TorchOk's embedding pooling).

TorchOk's ArcFace example (``representation_arcface_sop``) pools the backbone map and projects it
to a 512-d embedding here, so that the head (ArcFace) sees the embedding that retrieval uses.
"""

from __future__ import annotations

import torch
from torch import nn

from okc.errors import ParamError
from okc.models.poolings.global_pool import Pooling, PoolingType


class PoolingLinear(nn.Module):
    """``Linear(Pooling(x))``: (N, C, H, W) → (N, out_channels).

    The Linear layer starts from N(0, 0.01) weights and zero bias, as in TorchOk: a small initial
    projection keeps the first embeddings (and ArcFace's first cosines) near zero.

    ``output_size`` is accepted for TorchOk configs but must be 1 (global pooling): TorchOk sized
    the Linear layer for ``in_channels`` features whatever the pooled grid, so any other value
    failed there on the first batch.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        pooling_type: PoolingType = "avg",
        output_size: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if output_size != 1:
            raise ParamError(
                "output_size", f"only 1 (global pooling) is supported, got {output_size}"
            )
        if out_channels < 1:
            raise ParamError("out_channels", f"must be at least 1, got {out_channels}")
        self.pooling = Pooling(in_channels=in_channels, pooling_type=pooling_type)
        self.fc = nn.Linear(self.pooling.out_channels, out_channels, bias=bias)
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        if self.fc.bias is not None:
            nn.init.zeros_(self.fc.bias)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pooling(x))
