"""Feature pyramid network, fused into one map that a pooling or segmentation head can take."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from okc.errors import ParamError
from okc.models.necks.blocks import conv_bn_relu


class FPN(nn.Module):
    """Top-down pyramid with lateral 1x1 convs; the smoothed levels are upsampled and summed.

    Returns one ``out_channels`` map at the stride of stage ``start_level`` (default: the first
    stage with stride 4 or more, which skips a ResNet's costly stride-2 stem map), in the manner of
    Panoptic FPN's semantic branch. Multi-level outputs for detection heads are not offered yet.
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        out_channels: int = 256,
        start_level: int | None = None,
        use_batchnorm: bool = True,
    ) -> None:
        super().__init__()
        if start_level is None:
            start_level = next((i for i, s in enumerate(in_strides) if s >= 4), 0)
        if not 0 <= start_level < len(in_channels):
            raise ParamError(
                "start_level",
                f"must name a backbone stage, 0 to {len(in_channels) - 1}; got {start_level}",
            )
        if out_channels < 1:
            raise ParamError("out_channels", f"must be at least 1, got {out_channels}")
        used = list(in_channels[start_level:])
        self.start_level = start_level
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in used)
        self.smooth = nn.ModuleList(
            conv_bn_relu(out_channels, out_channels, batchnorm=use_batchnorm) for _ in used
        )
        self.out_channels = int(out_channels)
        self.out_stride = int(in_strides[start_level])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        levels = [
            lateral(f)
            for lateral, f in zip(self.lateral, features[self.start_level :], strict=True)
        ]
        for i in range(len(levels) - 2, -1, -1):  # top-down: deepest level into the finer ones
            levels[i] = levels[i] + F.interpolate(
                levels[i + 1], size=levels[i].shape[-2:], mode="nearest"
            )
        size = levels[0].shape[-2:]
        fused = self.smooth[0](levels[0])
        for smooth, level in zip(self.smooth[1:], levels[1:], strict=True):
            fused = fused + F.interpolate(
                smooth(level), size=size, mode="bilinear", align_corners=False
            )
        return fused
