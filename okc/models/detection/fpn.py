"""The detection FPN: a pyramid of equally wide maps, one per level, with mmdet's parameters.

okc has no mmdet, so this is okc's own module, written to mmdet's FPN behaviour (which TorchOk
configs were tuned against): lateral 1x1 convs, a top-down path, 3x3 output convs, and extra
levels by stride-2 convs (``add_extra_convs``) or max pooling. okc hands it the backbone maps
finest first, as mmdet expects (TorchOk reversed them twice to the same effect).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from okc.config.params import given
from okc.errors import ParamError
from okc.models.detection.configs import ActCfg, NormCfg, UpsampleCfg
from okc.models.detection.layers import ConvNormAct


def _levels(num_ins: int, num_outs: int, start_level: int, end_level: int) -> int:
    """mmdet's ``backbone_end_level``: one past the last input level used (``end_level`` is
    inclusive; -1 means the last)."""
    if not 0 <= start_level < num_ins:
        raise ParamError("start_level", f"must name an input level, 0 to {num_ins - 1}")
    if end_level in (-1, num_ins - 1):
        if num_outs < num_ins - start_level:
            raise ParamError(
                "num_outs", f"must be at least {num_ins - start_level} (the input levels used)"
            )
        return num_ins
    if not start_level <= end_level < num_ins:
        raise ParamError("end_level", f"must be -1 or in {start_level}..{num_ins - 1}")
    if num_outs != end_level - start_level + 1:
        raise ParamError(
            "num_outs", "must equal end_level - start_level + 1 when end_level is not the last"
        )
    return end_level + 1


class FPN(nn.Module):
    """Feature Pyramid Network (Lin et al., 2017) with mmdet's parameters.

    Args:
        in_channels: channels of the input maps, finest first (supplied by okc).
        in_strides: their strides (supplied by okc); the outputs' strides follow.
        out_channels: channels of every output map.
        num_outs: how many maps it returns; levels past the inputs are extra levels.
        start_level: first input level used; end_level: last one (inclusive, -1: the last).
        add_extra_convs: false (extra levels by max pooling), true/on_input (stride-2 convs from
            the last input map), on_lateral (from the last lateral) or on_output (from the last
            output).
        relu_before_extra_convs: a ReLU before every extra conv after the first.
        no_norm_on_lateral: no ``norm_cfg`` on the lateral convs.
        norm_cfg, act_cfg: mmcv-style norm and activation after every conv (default none).
        upsample_cfg: ``F.interpolate`` arguments of the top-down path.
    """

    @attrs.frozen(kw_only=True)
    class Params:
        out_channels: int = 256
        num_outs: int = 5
        start_level: int = 0
        end_level: int = -1
        add_extra_convs: bool | Literal["on_input", "on_lateral", "on_output"] = False
        relu_before_extra_convs: bool = False
        no_norm_on_lateral: bool = False
        norm_cfg: NormCfg | None = None
        act_cfg: ActCfg | None = None
        upsample_cfg: UpsampleCfg = UpsampleCfg()

        def __attrs_post_init__(self) -> None:
            if self.out_channels < 1:
                raise ParamError("out_channels", f"must be at least 1, got {self.out_channels}")

    def __init__(
        self,
        params: Params | None = None,
        /,
        *,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        **keys: Any,
    ) -> None:
        super().__init__()
        p = given(type(self), params, keys)
        out_channels, num_outs, start_level = p.out_channels, p.num_outs, p.start_level
        self.end = _levels(len(in_channels), num_outs, start_level, p.end_level)
        self.start, self.num_outs = start_level, num_outs
        self.extra_mode = "on_input" if p.add_extra_convs is True else p.add_extra_convs or None
        self.relu_before_extra_convs = p.relu_before_extra_convs
        norm, act = p.norm_cfg, p.act_cfg
        self.upsample = {k: v for k, v in attrs.asdict(p.upsample_cfg).items() if v is not None}
        lateral_norm = None if p.no_norm_on_lateral else norm
        used = range(start_level, self.end)
        self.lateral_convs = nn.ModuleList(
            ConvNormAct(in_channels[i], out_channels, 1, norm=lateral_norm, act=act) for i in used
        )
        self.fpn_convs = nn.ModuleList(
            ConvNormAct(out_channels, out_channels, 3, norm=norm, act=act) for _ in used
        )
        num_extra = num_outs - len(used)
        for i in range(num_extra if self.extra_mode else 0):
            source = in_channels[self.end - 1] if i == 0 and self.extra_mode == "on_input" else None
            self.fpn_convs.append(
                ConvNormAct(source or out_channels, out_channels, 3, stride=2, norm=norm, act=act)
            )
        strides = [int(in_strides[i]) for i in used]
        strides += [strides[-1] * 2 ** (i + 1) for i in range(num_extra)]
        self.out_channels = int(out_channels)
        self.out_strides = strides
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier-uniform convs and zero biases, as mmdet initialises its FPN."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(inputs[self.start + i]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):  # top-down: coarse into the next finer level
            if "scale_factor" in self.upsample:
                up = F.interpolate(laterals[i], **self.upsample)
            else:
                up = F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], **self.upsample)
            laterals[i - 1] = laterals[i - 1] + up
        used = len(laterals)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(used)]
        if self.num_outs > used and self.extra_mode is None:
            for _ in range(self.num_outs - used):
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        elif self.num_outs > used:
            source = {
                "on_input": inputs[self.end - 1],
                "on_lateral": laterals[-1],
                "on_output": outs[-1],
            }[self.extra_mode]
            outs.append(self.fpn_convs[used](source))
            for i in range(used + 1, self.num_outs):
                x = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                outs.append(self.fpn_convs[i](x))
        return outs
