"""Layers shared by the necks and heads."""

from __future__ import annotations

from torch import nn


def conv_bn_relu(
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: int = 3,
    stride: int = 1,
    batchnorm: bool = True,
) -> nn.Sequential:
    """Conv → BatchNorm → ReLU; the conv has no bias when a BatchNorm follows it."""
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            bias=not batchnorm,
        )
    ]
    if batchnorm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)
