"""ArcFace (additive angular margin) head for metric learning."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from okc.errors import ParamError

_EPS = 1e-7  # keeps acos-free sin(θ) = sqrt(1 - cos²θ) and its gradient finite at cos = ±1


def default_scale(num_classes: int) -> float:
    """TorchOk's automatic scale: large enough for a 0.999 target probability at cos θ = 1."""
    c = num_classes
    return (c - 1) / c * math.log((c - 1) * 0.999 / 0.001) + 1


def default_margin(num_classes: int, in_channels: int) -> float:
    """TorchOk's automatic margin (a 2-D embedding, used for plots, has its own rule)."""
    if in_channels == 2:
        return 0.9 - math.cos(2 * math.pi / num_classes)
    return 0.5 * num_classes / (num_classes - 1)


class ArcFaceHead(nn.Module):
    """Scaled cosine logits between the normalised embedding and normalised class centres.

    In training, with a target, the target class's angle gets the margin: s·cos(θ + m). Otherwise
    (eval, or no target) it returns s·cos θ: the same logits minus the margin. TorchOk's version
    returned raw dot products in eval, so eval logits did not match training.
    """

    input_kind: ClassVar[Literal["vector", "map"]] = "vector"

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        margin: float | None = None,
        scale: float | None = None,
        easy_margin: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ParamError("num_classes", f"ArcFace needs at least 2 classes, got {num_classes}")
        self.margin = default_margin(num_classes, in_channels) if margin is None else float(margin)
        self.scale = default_scale(num_classes) if scale is None else float(scale)
        if not 0.0 <= self.margin < math.pi:
            raise ParamError("margin", f"must be in [0, π) radians, got {self.margin}")
        if self.scale <= 0:
            raise ParamError("scale", f"must be positive, got {self.scale}")
        self.num_classes = num_classes
        self.easy_margin = easy_margin
        self.weight = nn.Parameter(torch.empty(num_classes, in_channels))
        nn.init.xavier_uniform_(self.weight)
        self.out_channels = num_classes

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        cosine = F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))
        # float32 even under autocast: in bf16, 1 - 1e-7 rounds to 1 and sin(θ)'s gradient to inf.
        cosine = cosine.float().clamp(-1 + _EPS, 1 - _EPS)
        if not self.training or target is None:
            return self.scale * cosine
        m = self.margin
        sine = torch.sqrt(1.0 - cosine * cosine)
        with_margin = cosine * math.cos(m) - sine * math.sin(m)  # cos(θ + m)
        if self.easy_margin:
            with_margin = torch.where(cosine > 0, with_margin, cosine)
        else:  # past θ = π - m, cos(θ + m) would rise again: fall back to a linear penalty
            with_margin = torch.where(
                cosine > math.cos(math.pi - m), with_margin, cosine - math.sin(math.pi - m) * m
            )
        is_target = F.one_hot(target.long(), self.num_classes).bool()
        return self.scale * torch.where(is_target, with_margin, cosine)
