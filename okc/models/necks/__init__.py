"""Necks: connect a backbone's stage maps into the one map a pooling or segmentation head takes.

A neck is built with ``in_channels`` and ``in_strides`` (one per backbone stage, finest first),
supplied by okc, and states ``out_channels`` and ``out_stride``. No neck means ``LastStage``.
"""

from __future__ import annotations

from okc.models.necks.fpn import FPN
from okc.models.necks.hrnet import HRNetClassificationNeck, HRNetSegmentationNeck
from okc.models.necks.last_stage import LastStage
from okc.models.necks.unet import UNet
from okc.registry import NECKS

__all__ = ["FPN", "HRNetClassificationNeck", "HRNetSegmentationNeck", "LastStage", "UNet"]

NECKS.register(UNet)
NECKS.register(UNet, name="UnetNeck")  # TorchOk's name
NECKS.register(FPN)
NECKS.register(HRNetSegmentationNeck)
NECKS.register(HRNetClassificationNeck)
