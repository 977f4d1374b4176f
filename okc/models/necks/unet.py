"""U-Net decoder: upsample the deepest map stage by stage, concatenating the backbone's skips."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from okc.errors import ParamError
from okc.models.necks.blocks import conv_bn_relu


class _UpBlock(nn.Module):
    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, *, batchnorm: bool
    ) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(in_channels + skip_channels, out_channels, batchnorm=batchnorm)
        self.conv2 = conv_bn_relu(out_channels, out_channels, batchnorm=batchnorm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        if skip is None:  # a block past the finest stage: plain 2x upsampling
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:  # to the skip's size, not 2x: odd input sizes give stages that do not halve exactly
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class UNet(nn.Module):
    """U-Net decoder over a backbone's stages; returns one map at the finest decoded stride.

    ``decoder_channels`` gives one block per entry, deepest first. The first ``len(stages) - 1``
    blocks each merge a backbone skip; any further block upsamples 2x on its own, so a TorchOk-style
    five-entry list decodes a ResNet to full resolution. The default is one block per skip, as
    wide as that skip.
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        decoder_channels: Sequence[int] | None = None,
        use_batchnorm: bool = True,
    ) -> None:
        super().__init__()
        skips = list(in_channels[:-1])[::-1]  # deepest skip first
        widths = list(decoder_channels) if decoder_channels is not None else skips
        if any(w < 1 for w in widths):
            raise ParamError("decoder_channels", f"each entry must be at least 1, got {widths}")
        num_extra = max(0, len(widths) - len(skips))
        if in_strides[0] % 2**num_extra:
            raise ParamError(
                "decoder_channels",
                f"{len(widths)} blocks upsample past full resolution: the backbone's finest stage "
                f"has stride {in_strides[0]}, so at most {len(skips)} + "
                f"{int(in_strides[0]).bit_length() - 1} blocks fit",
            )
        self.num_skips = min(len(skips), len(widths))
        blocks, previous = [], in_channels[-1]
        for i, width in enumerate(widths):
            skip = skips[i] if i < len(skips) else 0
            blocks.append(_UpBlock(previous, skip, width, batchnorm=use_batchnorm))
            previous = width
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = int(previous)
        finest_used = in_strides[len(in_strides) - 1 - self.num_skips]
        self.out_stride = int(finest_used) // 2**num_extra

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for i, block in enumerate(self.blocks):
            skip = features[-2 - i] if i < self.num_skips else None
            x = block(x, skip)
        return x
