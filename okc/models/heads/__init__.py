"""Heads: the task-specific end of a model. Every head's forward is ``(x, target=None)``.

A head is built with ``in_channels`` from okc and states ``out_channels``. Its ``input_kind`` says
whether it takes a pooled embedding (``"vector"``, (N, C)) or a map (``"map"``, (N, C, H, W)), so a
misfit (a segmentation head after a global pooling) is a config error, not a shape error in torch.
"""

from __future__ import annotations

from okc.models.heads.arcface import ArcFaceHead
from okc.models.heads.classification import ClassificationHead, LinearHead
from okc.models.heads.ocr import OCRSegmentationHead
from okc.models.heads.segmentation import SegmentationHead
from okc.registry import HEADS

__all__ = [
    "ArcFaceHead",
    "ClassificationHead",
    "LinearHead",
    "OCRSegmentationHead",
    "SegmentationHead",
]

for _head in (ClassificationHead, LinearHead, ArcFaceHead, SegmentationHead, OCRSegmentationHead):
    HEADS.register(_head)
