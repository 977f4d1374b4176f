"""Conv → norm → activation blocks built from mmcv-style configs, and FCOS's learnable scale."""

from __future__ import annotations

import functools

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

from okc.models.detection.configs import ActCfg, NormCfg


def norm_layer(cfg: NormCfg, channels: int) -> nn.Module:
    kwargs = {} if cfg.eps is None else {"eps": cfg.eps}
    if cfg.type == "GN":
        assert cfg.num_groups is not None
        if channels % cfg.num_groups:
            raise ValueError(
                f"GroupNorm: {channels} channels do not split into {cfg.num_groups} groups; "
                "set norm_cfg.num_groups to a divisor of the channel count"
            )
        layer: nn.Module = nn.GroupNorm(cfg.num_groups, channels, **kwargs)
    else:
        if cfg.momentum is not None:
            kwargs["momentum"] = cfg.momentum
        layer = nn.BatchNorm2d(channels, **kwargs)
    for p in layer.parameters():
        p.requires_grad_(cfg.requires_grad)
    return layer


def activation(cfg: ActCfg) -> nn.Module:
    if cfg.type == "ReLU":
        return nn.ReLU(inplace=cfg.inplace)
    if cfg.type == "ReLU6":
        return nn.ReLU6(inplace=cfg.inplace)
    if cfg.type == "LeakyReLU":
        slope = 0.01 if cfg.negative_slope is None else cfg.negative_slope
        return nn.LeakyReLU(slope, inplace=cfg.inplace)
    if cfg.type in ("SiLU", "Swish"):
        return nn.SiLU(inplace=cfg.inplace)
    return {"GELU": nn.GELU, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh}[cfg.type]()


class ConvNormAct(Conv2dNormActivation):
    """mmcv's ConvModule as torchvision's Conv2dNormActivation: a conv (with a bias only when no
    norm follows, unless ``bias`` says), norm, activation; "same" padding for odd kernels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        norm: NormCfg | None = None,
        act: ActCfg | None = None,
        bias: bool | str = "auto",
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride,
            norm_layer=None if norm is None else functools.partial(norm_layer, norm),
            activation_layer=None if act is None else functools.partial(activation, act),
            inplace=None,  # the act config says
            bias=None if bias == "auto" else bool(bias),
        )  # fmt: skip

    @property
    def conv(self) -> nn.Conv2d:
        return self[0]


class Scale(nn.Module):
    """A learnable scalar per pyramid level (FCOS scales its shared regression per level)."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale
