"""Global poolings: one (N, C, H, W) map → one (N, C') vector per image."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from okc.errors import ParamError

PoolingType = Literal["avg", "max", "avgmax", "catavgmax"]


class Pooling(nn.Module):
    """Average, max, their mean (``avgmax``) or their concatenation (``catavgmax``, 2x channels).

    TorchOk's ``Pooling``; always global and flattened.
    """

    def __init__(self, *, in_channels: int, pooling_type: PoolingType = "avg") -> None:
        super().__init__()
        if pooling_type not in ("avg", "max", "avgmax", "catavgmax"):
            raise ParamError(
                "pooling_type", f"must be avg, max, avgmax or catavgmax; got {pooling_type!r}"
            )
        self.pooling_type = pooling_type
        self.out_channels = in_channels * 2 if pooling_type == "catavgmax" else in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling_type == "avg":
            return x.mean(dim=(2, 3))
        if self.pooling_type == "max":
            return x.amax(dim=(2, 3))
        avg, top = x.mean(dim=(2, 3)), x.amax(dim=(2, 3))
        if self.pooling_type == "avgmax":
            return 0.5 * (avg + top)
        return torch.cat([avg, top], dim=1)


class GeM(nn.Module):
    """Generalised mean pooling (Radenović et al.): between average (p=1) and max (p→∞).

    ``p`` is learned by default, which is what makes GeM worth having over a fixed pooling for
    retrieval embeddings.
    """

    def __init__(
        self, *, in_channels: int, p: float = 3.0, eps: float = 1e-6, learn_p: bool = True
    ) -> None:
        super().__init__()
        if p <= 0:
            raise ParamError("p", f"must be positive, got {p}")
        self.p = nn.Parameter(torch.tensor([float(p)]), requires_grad=learn_p)
        self.eps = eps
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class SPOC(nn.Module):
    """Sum-pooled convolutional features (SPoC, Babenko & Lempitsky) without PCA whitening.

    Only the direction of a SPoC vector matters for retrieval: normalise it in the head
    (``LinearHead(normalize=true)``) or the metric.
    """

    def __init__(self, *, in_channels: int) -> None:
        super().__init__()
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=(2, 3))
