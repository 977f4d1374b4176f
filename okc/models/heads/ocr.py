"""HRNet-OCR: object-contextual representations (Yuan et al., ECCV 2020) as a segmentation head.

An auxiliary 1x1 classifier gives coarse class maps (the soft object regions); each region's
representation is the probability-weighted mean of the pixel features; every pixel then attends
over the region representations (key/query/value 1x1 Conv-BN-ReLU stacks), and the attended context
is concatenated with the pixel features and classified.

TorchOk's head returned ``(out, out_aux)`` in training mode, which neither its task nor its losses
could take. Here ``forward`` always returns the main logits (what inference and export want) and
``forward(..., with_aux=True)`` returns both, so ``SegmentationTask`` can expose the auxiliary
logits as their own output (``prediction_aux``) for a loss to map. TorchOk also squeezed the logits
to 8 channels (``ocr_mid_channels // 16``) before the classifier, a bottleneck narrower than many
label sets; the classifier here reads the ``ocr_mid_channels`` features directly, as the paper's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from okc.errors import ParamError
from okc.models.necks.blocks import conv_bn_relu


class _ObjectAttention(nn.Module):
    """Pixels (queries) attend over the object-region representations (keys and values)."""

    def __init__(self, channels: int, key_channels: int) -> None:
        super().__init__()
        self.key_channels = key_channels

        def transform() -> nn.Sequential:
            return nn.Sequential(
                conv_bn_relu(channels, key_channels, kernel_size=1),
                conv_bn_relu(key_channels, key_channels, kernel_size=1),
            )

        self.query, self.key = transform(), transform()
        self.value = conv_bn_relu(channels, key_channels, kernel_size=1)
        self.up = conv_bn_relu(key_channels, channels, kernel_size=1)

    def forward(self, pixels: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        n, _, h, w = pixels.shape
        query = self.query(pixels).flatten(2).transpose(1, 2)  # (N, HW, key)
        key = self.key(regions).flatten(2)  # (N, key, K)
        value = self.value(regions).flatten(2).transpose(1, 2)  # (N, K, key)
        attention = torch.softmax(query @ key * self.key_channels**-0.5, dim=-1)  # (N, HW, K)
        context = (attention @ value).transpose(1, 2).reshape(n, self.key_channels, h, w)
        return self.up(context)


class OCRSegmentationHead(nn.Module):
    """HRNet-OCR head: class logits refined by object-contextual attention.

    Args:
        num_classes: output channels (the task reads one channel as binary segmentation).
        do_interpolate: upsample the logits bilinearly to the input image's size.
        ocr_mid_channels: width of the pixel features the attention refines.
        ocr_key_channels: width of the attention's queries, keys and values.
    """

    input_kind: ClassVar[Literal["vector", "map"]] = "map"
    needs_image_size: ClassVar[bool] = True
    #: ``forward(..., with_aux=True)`` also returns the auxiliary logits (``GivesAuxLogits``)
    has_aux: ClassVar[bool] = True

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        do_interpolate: bool = True,
        ocr_mid_channels: int = 128,
        ocr_key_channels: int = 64,
    ) -> None:
        super().__init__()
        for key, value in (
            ("num_classes", num_classes),
            ("ocr_mid_channels", ocr_mid_channels),
            ("ocr_key_channels", ocr_key_channels),
        ):
            if value < 1:
                raise ParamError(key, f"must be at least 1, got {value}")
        self.do_interpolate = do_interpolate
        self.out_channels = num_classes
        self.aux_head = nn.Sequential(
            conv_bn_relu(in_channels, in_channels, kernel_size=1),
            nn.Conv2d(in_channels, num_classes, kernel_size=1),
        )
        self.pixel_features = conv_bn_relu(in_channels, ocr_mid_channels, kernel_size=3)
        self.attention = _ObjectAttention(ocr_mid_channels, ocr_key_channels)
        self.fuse = nn.Sequential(
            conv_bn_relu(2 * ocr_mid_channels, ocr_mid_channels, kernel_size=1),
            nn.Dropout2d(0.05),
        )
        self.classifier = nn.Conv2d(ocr_mid_channels, num_classes, kernel_size=1)

    def forward(
        self,
        x: torch.Tensor,
        target: torch.Tensor | None = None,
        *,
        image_size: Sequence[int] | None = None,
        with_aux: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        aux = self.aux_head(x)
        pixels = self.pixel_features(x)
        # Soft object regions: per class, a softmax over the pixels weights their features.
        weights = torch.softmax(aux.flatten(2), dim=2)  # (N, K, HW)
        regions = (weights @ pixels.flatten(2).transpose(1, 2)).transpose(1, 2).unsqueeze(-1)
        context = self.attention(pixels, regions)  # regions: (N, C, K, 1)
        logits = self.classifier(self.fuse(torch.cat([context, pixels], dim=1)))
        if self.do_interpolate and image_size is not None:
            logits = _resize(logits, image_size)
            aux = _resize(aux, image_size)
        return (logits, aux) if with_aux else logits


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
