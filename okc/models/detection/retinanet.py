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

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import clip_boxes_to_image

from okc.models.detection.assign import inside_image, max_iou_assign
from okc.models.detection.configs import AnchorGeneratorCfg, AssignerCfg, DeltaCoderCfg, TrainCfg
from okc.models.detection.dense import DenseHead, DenseParams, check_labels, flatten_levels

#: mmdet's RetinaNet assigner, the default when ``train_cfg`` names none
RETINA_ASSIGNER = AssignerCfg(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)


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

    @attrs.frozen(kw_only=True)
    class Params(DenseParams):
        anchor_generator: AnchorGeneratorCfg = AnchorGeneratorCfg()
        bbox_coder: DeltaCoderCfg = DeltaCoderCfg()
        train_cfg: TrainCfg = TrainCfg()

    def __init__(self, params: Params | None = None, /, **keys: Any) -> None:
        super().__init__(params, **keys)
        p = self.params
        anchors = p.anchor_generator
        self._check_strides(anchors.strides, "anchor_generator.strides")
        self.assigner = p.train_cfg.assigner or RETINA_ASSIGNER
        self.allowed_border = float(p.train_cfg.allowed_border)
        self.coder = BoxCoder(weights=p.bbox_coder.weights)
        self.clip_border = p.bbox_coder.clip_border
        scales = anchors.level_scales()
        self.num_anchors = anchors.num_anchors
        self.center_offset = anchors.center_offset
        self.anchor_generator = AnchorGenerator(
            sizes=tuple(tuple(s * stride for s in scales) for stride in self.strides),
            aspect_ratios=(tuple(float(r) for r in anchors.ratios),) * len(self.strides),
        )
        width = self._towers()
        self.retina_cls = nn.Conv2d(width, self.num_anchors * p.num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(width, self.num_anchors * 4, 3, padding=1)
        self._init_weights(self.retina_cls)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: class logits (B, A * C, H, W) and box deltas (B, A * 4, H, W)."""
        self._check_levels(features)
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
            label, box = self._targets(matched, boxes, classes, anchors)
            labels.append(label)
            matched_boxes.append(box)
        flat_labels = torch.stack(labels).reshape(-1)
        flat_boxes = torch.stack(matched_boxes).reshape(-1, 4)
        flat_anchors = anchors.repeat(len(labels), 1)
        flat_cls = flatten_levels(cls_scores, self.num_classes).reshape(-1, self.num_classes)
        flat_deltas = flatten_levels(bbox_preds, 4).reshape(-1, 4).float()
        pos, num_pos = self._positives(flat_labels)
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
