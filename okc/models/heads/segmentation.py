"""Per-pixel class logits at the input image's size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from okc.errors import ParamError


@runtime_checkable
class GivesAuxLogits(Protocol):
    """A segmentation head whose ``forward(..., with_aux=True)`` returns ``(logits, aux_logits)``
    (HRNet-OCR's auxiliary classifier), both shaped alike; plain ``forward`` gives the logits."""

    has_aux: bool


def gives_aux_logits(head: object) -> bool:
    """Whether ``head`` (a head or its class) gives auxiliary logits."""
    return isinstance(head, GivesAuxLogits) and bool(head.has_aux)


class SegmentationHead(nn.Module):
    """1x1 conv to class logits, then bilinear upsampling to ``image_size``.

    ``Model`` passes ``image_size`` (the input's H, W) because only it sees the image; it is read
    from the input's shape, so exported graphs follow the input size instead of baking one in.
    Logits stay (N, C, H, W) even for one class; squeezing is the task's choice.
    """

    input_kind: ClassVar[Literal["vector", "map"]] = "map"
    needs_image_size: ClassVar[bool] = True

    def __init__(self, *, in_channels: int, num_classes: int, do_interpolate: bool = True) -> None:
        super().__init__()
        if num_classes < 1:
            raise ParamError("num_classes", f"must be at least 1, got {num_classes}")
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=1)
        self.do_interpolate = do_interpolate
        self.out_channels = num_classes

    def forward(
        self,
        x: torch.Tensor,
        target: torch.Tensor | None = None,
        *,
        image_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        logits = self.classifier(x)
        if self.do_interpolate and image_size is not None:
            logits = F.interpolate(logits, size=image_size, mode="bilinear", align_corners=False)
        return logits
