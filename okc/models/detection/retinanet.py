"""RetinaNet (Lin et al., 2017): anchors at every location, focal loss, box deltas.

Anchors come from torchvision's ``AnchorGenerator`` and box deltas from torchvision's
``BoxCoder``; the head follows mmdet's RetinaHead parameters. Loss inputs:

- ``flatten_cls_scores`` (M, C) logits of every anchor of every image; ``flatten_labels`` (M,)
  its class, ``C`` for background, -1 for anchors the assigner ignores;
- ``num_pos`` (scalar): positive anchors (mean over training processes, at least 1);
- ``pos_bbox_preds`` / ``pos_bbox_targets`` (P, 4): predicted and target deltas of the positive
  anchors (for an L1 or smooth-L1 loss);
- ``pos_decoded_bbox_preds`` / ``pos_decoded_target_preds`` (P, 4): the same as boxes in pixels
  (for IoU/GIoU losses: mmdet's ``reg_decoded_bbox``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import clip_boxes_to_image

from okc.errors import ParamError
from okc.models.detection.assign import IGNORED, inside_image, max_iou_assign
from okc.models.detection.configs import (
    ActCfg,
    AnchorGeneratorCfg,
    AssignerCfg,
    DeltaCoderCfg,
    NormCfg,
    TestCfg,
    TrainCfg,
    cfg_problems,
    parse,
    parse_optional,
)
from okc.models.detection.dense import (
    DenseHead,
    check_labels,
    flatten_levels,
    prior_probability_bias,
    reduce_mean,
)
from okc.models.detection.layers import ConvNormAct

_RETINA_ASSIGNER = {"pos_iou_thr": 0.5, "neg_iou_thr": 0.4, "min_pos_iou": 0.0}


def param_problems(params: Mapping[str, Any]) -> list[ParamError]:
    return cfg_problems(
        params,
        {
            "norm_cfg": NormCfg,
            "anchor_generator": AnchorGeneratorCfg,
            "bbox_coder": DeltaCoderCfg,
            "train_cfg": TrainCfg,
            "test_cfg": TestCfg,
        },
    )


class RetinaNetHead(DenseHead):
    """RetinaNet head (mmdet's RetinaHead parameters).

    Args:
        num_classes: object classes (no background class).
        in_channels, in_strides: the neck's channels and level strides (supplied by okc).
        feat_channels, stacked_convs: width and depth of the classification and regression towers.
        norm_cfg: the towers' norm (default none, as mmdet's RetinaNet).
        conv_bias: bias in the tower convs: "auto" (only without a norm), true or false.
        anchor_generator: ``okc.models.detection.configs.AnchorGeneratorCfg`` (mmdet's defaults:
            scales 4 * 2^(i/3), ratios 0.5, 1, 2; strides default to the levels').
        bbox_coder: ``DeltaXYWHBBoxCoder`` settings (``target_stds``, ``clip_border``).
        train_cfg: ``{assigner: MaxIoUAssigner ..., allowed_border}`` (default: IoU >= 0.5
            positive, < 0.4 negative, each box also takes its best anchors).
        test_cfg: post-processing (``okc.models.detection.configs.TestCfg``).
    """

    loss_keys = (
        "flatten_cls_scores", "flatten_labels", "num_pos", "pos_bbox_preds", "pos_bbox_targets",
        "pos_decoded_bbox_preds", "pos_decoded_target_preds",
    )  # fmt: skip
    param_problems = staticmethod(param_problems)

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        in_strides: Sequence[int],
        feat_channels: int = 256,
        stacked_convs: int = 4,
        norm_cfg: Mapping[str, Any] | None = None,
        conv_bias: bool | str = "auto",
        anchor_generator: Mapping[str, Any] | None = None,
        bbox_coder: Mapping[str, Any] | None = None,
        train_cfg: Mapping[str, Any] | None = None,
        test_cfg: Mapping[str, Any] | None = None,
    ) -> None:
        anchors = parse(AnchorGeneratorCfg, anchor_generator, "anchor_generator")
        super().__init__(
            num_classes=num_classes, in_channels=in_channels, in_strides=in_strides,
            strides=anchors.strides, test_cfg=test_cfg, strides_key="anchor_generator.strides",
        )  # fmt: skip
        train = parse(TrainCfg, train_cfg, "train_cfg")
        self.assigner = train.assigner or AssignerCfg(**_RETINA_ASSIGNER)
        self.allowed_border = float(train.allowed_border)
        coder = parse(DeltaCoderCfg, bbox_coder, "bbox_coder")
        self.coder = BoxCoder(weights=coder.weights)
        self.clip_border = coder.clip_border
        if conv_bias not in (True, False, "auto"):
            raise ParamError("conv_bias", f"expected true, false or 'auto', got {conv_bias!r}")
        if feat_channels < 1 or stacked_convs < 0:
            raise ParamError("feat_channels", "need feat_channels >= 1 and stacked_convs >= 0")
        scales = anchors.level_scales()
        self.num_anchors = anchors.num_anchors
        self.center_offset = anchors.center_offset
        self.anchor_generator = AnchorGenerator(
            sizes=tuple(tuple(s * stride for s in scales) for stride in self.strides),
            aspect_ratios=(tuple(float(r) for r in anchors.ratios),) * len(self.strides),
        )
        norm = parse_optional(NormCfg, norm_cfg, "norm_cfg")
        relu = ActCfg(type="ReLU")

        def tower() -> nn.Sequential:
            return nn.Sequential(*(
                ConvNormAct(in_channels if i == 0 else feat_channels, feat_channels, 3,
                            norm=norm, act=relu, bias=conv_bias)
                for i in range(stacked_convs)
            ))  # fmt: skip

        self.cls_convs, self.reg_convs = tower(), tower()
        width = feat_channels if stacked_convs else in_channels
        self.retina_cls = nn.Conv2d(width, self.num_anchors * num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(width, self.num_anchors * 4, 3, padding=1)
        self._init_weights()

    def _init_weights(self) -> None:
        """mmdet's init: N(0, 0.01) convs, zero biases, the classifier biased to p = 0.01."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.retina_cls.bias, prior_probability_bias())

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: class logits (B, A * C, H, W) and box deltas (B, A * 4, H, W)."""
        if len(features) != len(self.strides):
            raise ValueError(
                f"RetinaNetHead has {len(self.strides)} levels, got {len(features)} maps"
            )
        cls_scores = [self.retina_cls(self.cls_convs(x)) for x in features]
        bbox_preds = [self.retina_reg(self.reg_convs(x)) for x in features]
        return cls_scores, bbox_preds

    def anchors(self, raw: Any) -> Tensor:
        """Every anchor (N, 4) xyxy in pixels, level by level, location by location.

        The cell anchors are torchvision's; they are laid on the grid here as torchvision's
        ``grid_anchors`` does (a shift of ``stride`` per cell), but from the maps' sizes as
        tensors, so a traced or exported model follows the input size.
        """
        maps = raw[0]
        generator = self.anchor_generator
        generator.set_cell_anchors(torch.float32, maps[0].device)
        levels = []
        for m, cell, stride in zip(maps, generator.cell_anchors, self.strides, strict=True):
            offset = self.center_offset * stride
            ys = torch.arange(m.shape[-2], device=m.device, dtype=torch.float32) * stride + offset
            xs = torch.arange(m.shape[-1], device=m.device, dtype=torch.float32) * stride + offset
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            x, y = grid_x.reshape(-1), grid_y.reshape(-1)
            shifts = torch.stack([x, y, x, y], dim=1)
            levels.append((shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4))
        return torch.cat(levels)

    def level_sizes(self, raw: Any) -> list[int]:
        return [m.shape[-2] * m.shape[-1] * self.num_anchors for m in raw[0]]

    def decode(self, raw: Any, image_size: Sequence[int]) -> Tensor:
        """(B, N, 4 + C): boxes in pixels (clipped to the image) and class probabilities."""
        cls_scores, bbox_preds = raw
        anchors = self.anchors(raw)
        deltas = flatten_levels(bbox_preds, 4).float()
        batch, num = deltas.shape[:2]
        boxes = self.coder.decode_single(deltas.reshape(-1, 4), anchors.repeat(batch, 1)).reshape(
            batch, num, 4
        )
        if self.clip_border:
            boxes = clip_boxes_to_image(boxes, (image_size[0], image_size[1]))
        scores = flatten_levels(cls_scores, self.num_classes).float().sigmoid()
        return torch.cat([boxes, scores], dim=-1)

    @torch.compiler.disable  # per-image assignment has data-dependent shapes
    def loss_inputs(
        self, raw: Any, gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor],
        image_size: Sequence[int],
    ) -> dict[str, Tensor]:  # fmt: skip
        cls_scores, bbox_preds = raw
        check_labels(gt_labels, self.num_classes)
        anchors = self.anchors(raw)
        valid = None
        if self.allowed_border >= 0:
            valid = inside_image(anchors, int(image_size[0]), int(image_size[1]),
                                 self.allowed_border)  # fmt: skip
        labels, matched_boxes = [], []
        for boxes, classes in zip(gt_boxes, gt_labels, strict=True):
            boxes = boxes.to(anchors.device, torch.float32).reshape(-1, 4)
            matched = max_iou_assign(anchors, boxes, self.assigner, valid=valid)
            label = torch.full_like(matched, self.num_classes)
            box = anchors
            if boxes.shape[0]:
                label = torch.where(matched >= 0, classes.to(matched)[matched.clamp(min=0)], label)
                box = boxes[matched.clamp(min=0)]
            labels.append(label.masked_fill(matched == IGNORED, -1))
            matched_boxes.append(box)
        flat_labels = torch.stack(labels).reshape(-1)
        flat_boxes = torch.stack(matched_boxes).reshape(-1, 4)
        flat_anchors = anchors.repeat(len(labels), 1)
        flat_cls = flatten_levels(cls_scores, self.num_classes).reshape(-1, self.num_classes)
        flat_deltas = flatten_levels(bbox_preds, 4).reshape(-1, 4).float()
        pos = ((flat_labels >= 0) & (flat_labels < self.num_classes)).nonzero().squeeze(1)
        count = flat_deltas.new_tensor(pos.numel())
        num_pos = (reduce_mean(count) if self.training else count).clamp(min=1.0)
        pos_anchors, pos_deltas, pos_boxes = flat_anchors[pos], flat_deltas[pos], flat_boxes[pos]
        return {
            "flatten_cls_scores": flat_cls.float(),
            "flatten_labels": flat_labels,
            "num_pos": num_pos,
            "pos_bbox_preds": pos_deltas,
            "pos_bbox_targets": self.coder.encode_single(pos_boxes, pos_anchors),
            "pos_decoded_bbox_preds": self.coder.decode_single(pos_deltas, pos_anchors),
            "pos_decoded_target_preds": pos_boxes,
        }
