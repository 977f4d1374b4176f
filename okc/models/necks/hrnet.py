"""HRNet's necks (TorchOk's names) over a backbone's stage maps, timm's HRNets in particular.

timm's ``hrnet_*`` models with ``features_only`` return five maps: the stride-2 stem, then the four
parallel branches at strides 4, 8, 16 and 32. Which branch maps depends on timm's
``feature_location``: ``'incre'`` (timm's default) passes each branch through HRNet's pretrained
"increase" bottlenecks (128, 256, 512, 1024 channels); ``''`` gives the raw branches (w18: 18, 36,
72, 144), which is what TorchOk's own HRNet backbones returned and what HRNetV2 segments from.
``SegmentationTask`` therefore asks timm HRNets for the raw branches unless ``backbone_params``
sets ``feature_location``; ``ClassificationTask`` keeps timm's default.

Both necks use the maps from stride 4 on (the stem is skipped), so they also run on other
backbones, and both follow the stage sizes rather than assume exact halving.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.models.resnet import Bottleneck
from torch import nn

from okc.models.necks.blocks import conv_bn_relu


def branch_levels(in_strides: Sequence[int]) -> list[int]:
    """The stages a HRNet neck uses: from the first one with stride 4 or more (skips the stem)."""
    first = next((i for i, s in enumerate(in_strides) if s >= 4), 0)
    return list(range(first, len(in_strides)))


class HRNetSegmentationNeck(nn.Module):
    """HRNetV2's representation head: the branch maps upsampled to the finest, concatenated.

    Bilinear upsampling to the finest branch's size, concatenation, then a 1x1 Conv-BN-ReLU that
    mixes the branches (TorchOk's layout). ``out_channels`` is the sum of the branches' channels
    (270 for hrnet_w18's raw branches), at the finest branch's stride.
    """

    def __init__(self, *, in_channels: Sequence[int], in_strides: Sequence[int]) -> None:
        super().__init__()
        self.levels = branch_levels(in_strides)
        self.out_channels = int(sum(in_channels[i] for i in self.levels))
        self.out_stride = int(in_strides[self.levels[0]])
        self.fuse = conv_bn_relu(self.out_channels, self.out_channels, kernel_size=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        branches = [features[i] for i in self.levels]
        size = branches[0].shape[-2:]
        upsampled = [branches[0]] + [
            F.interpolate(b, size=size, mode="bilinear", align_corners=False) for b in branches[1:]
        ]
        return self.fuse(torch.cat(upsampled, dim=1))


class HRNetClassificationNeck(nn.Module):
    """HRNet's classification head up to the pooling: one 2048-channel map at the coarsest stride.

    Each branch i is widened to ``32·2^i·4`` channels by a bottleneck (the "increase" modules),
    then the finest is repeatedly downsampled (3x3 stride-2 Conv-BN-ReLU) and summed into the next
    branch, and a 1x1 Conv-BN-ReLU gives ``out_channels``. A branch that already has the widened
    channel count (timm's default ``feature_location='incre'``, whose increase modules carry
    pretrained weights) is used as it is instead of being widened again.

    TorchOk's version overwrote the running sum with each branch instead of adding to it (only the
    coarsest branch reached the output); this one sums, as HRNet does.
    """

    def __init__(
        self, *, in_channels: Sequence[int], in_strides: Sequence[int], out_channels: int = 2048
    ) -> None:
        super().__init__()
        self.levels = branch_levels(in_strides)
        widths = [32 * 2**k * Bottleneck.expansion for k in range(len(self.levels))]
        self.incre = nn.ModuleList(
            _increase(in_channels[level], width)
            for level, width in zip(self.levels, widths, strict=True)
        )
        self.downsample = nn.ModuleList(
            conv_bn_relu(widths[k], widths[k + 1], kernel_size=3, stride=2)
            for k in range(len(widths) - 1)
        )
        self.final = conv_bn_relu(widths[-1], out_channels, kernel_size=1)
        self.out_channels = int(out_channels)
        self.out_stride = int(in_strides[self.levels[-1]])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        branches = [
            incre(features[level]) for incre, level in zip(self.incre, self.levels, strict=True)
        ]
        y = branches[0]
        for down, branch in zip(self.downsample, branches[1:], strict=True):
            y = down(y)
            if y.shape[-2:] != branch.shape[-2:]:  # stages of odd sizes round the other way
                y = F.interpolate(y, size=branch.shape[-2:], mode="bilinear", align_corners=False)
            y = branch + y
        return self.final(y)


def _increase(in_channels: int, width: int) -> nn.Module:
    if in_channels == width:
        return nn.Identity()
    planes = width // Bottleneck.expansion
    shortcut = nn.Sequential(
        nn.Conv2d(in_channels, width, kernel_size=1, bias=False), nn.BatchNorm2d(width)
    )
    return Bottleneck(in_channels, planes, downsample=shortcut)
