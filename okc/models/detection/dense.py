"""What single-stage (dense) detection heads share: levels, flattening, loss bookkeeping, and the
post-processing that turns dense scores into per-image detections.

A dense head's contract with the detection task:

- ``forward(features)`` → its raw per-level maps (what export and the loss start from);
- ``decode(raw, image_size)`` → one (B, N, 4 + C [+ 1]) tensor over every prior of every level:
  boxes (x1, y1, x2, y2 in input pixels), per-class probabilities and, for heads with a score
  factor (FCOS's centerness), that probability last. No NMS: this is what ONNX export writes;
- ``detections(dense, level_sizes)`` → per image ``{boxes, scores, labels}`` after ``test_cfg``;
- ``loss_inputs(raw, gt_boxes, gt_labels, image_size)`` → the tensors ``loss_keys`` names, which
  the experiment's ``joint_loss`` mappings read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchvision.ops import batched_nms, nms

from okc.errors import OkcError, ParamError
from okc.models.detection.configs import TestCfg, parse

Detections = list[dict[str, Tensor]]


def prior_probability_bias(prior: float = 0.01) -> float:
    """The classifier bias that starts every class at probability ``prior`` (RetinaNet's init):
    without it the many background priors swamp the focal loss in the first steps."""
    return -math.log((1 - prior) / prior)


def flatten_levels(maps: Sequence[Tensor], channels: int) -> Tensor:
    """(B, A * channels, H, W) per level → (B, sum(H * W * A), channels), level by level."""
    batch = maps[0].shape[0]
    return torch.cat([m.permute(0, 2, 3, 1).reshape(batch, -1, channels) for m in maps], dim=1)


def reduce_mean(value: Tensor) -> Tensor:
    """The mean over training processes (mmdet normalises losses by the global positive count)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
        value = value / dist.get_world_size()
    return value


def check_labels(labels: Sequence[Tensor], num_classes: int) -> None:
    """A label outside ``0..num_classes-1`` would be silently read as background (or crash a
    one-hot deep in the loss): name it instead."""
    flat = torch.cat([label.reshape(-1) for label in labels]) if labels else None
    if flat is None or flat.numel() == 0:
        return
    low, high = int(flat.min()), int(flat.max())  # sync point: one per training batch
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise OkcError(
            f"a box has label {bad}, but the detection head has num_classes {num_classes} "
            f"(labels 0..{num_classes - 1}); set task.params.head_params.num_classes or fix "
            "the dataset's labels"
        )


class DenseHead(nn.Module):
    """Base of okc's single-stage heads; see the module docstring for the contract."""

    #: the task outputs ``loss_inputs`` gives (what joint_loss mappings may name)
    loss_keys: ClassVar[tuple[str, ...]] = ()
    #: whether ``decode`` appends a score factor (multiplied into the class scores before NMS)
    has_score_factor: ClassVar[bool] = False
    #: the class ``test_cfg`` binds to (DETR's has no NMS settings)
    test_cfg_type: ClassVar[type] = TestCfg

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        in_strides: Sequence[int],
        strides: Sequence[int] | None,
        test_cfg: Mapping[str, Any] | None,
        strides_key: str = "strides",
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ParamError("num_classes", f"must be at least 1, got {num_classes}")
        if strides is not None and [int(s) for s in strides] != [int(s) for s in in_strides]:
            raise ParamError(
                strides_key,
                f"{list(strides)} but the neck gives maps at strides {list(in_strides)}; fix "
                "the strides or the neck (num_scales, start_level, num_outs)",
            )
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.strides = [int(s) for s in in_strides]
        self.test_cfg = parse(self.test_cfg_type, test_cfg, "test_cfg")

    # --- subclass parts --------------------------------------------------------------------------

    def decode(self, raw: Any, image_size: Sequence[int]) -> Tensor:
        raise NotImplementedError

    def loss_inputs(
        self, raw: Any, gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor],
        image_size: Sequence[int],
    ) -> dict[str, Tensor]:  # fmt: skip
        raise NotImplementedError

    def level_sizes(self, raw: Any) -> list[int]:
        """Priors per level, in ``decode``'s order."""
        raise NotImplementedError

    # --- shared --------------------------------------------------------------------------------

    @torch.compiler.disable  # data-dependent shapes (thresholds, NMS): keep it out of graphs
    def detections(self, dense: Tensor, level_sizes: Sequence[int]) -> Detections:
        """Per image ``{boxes (K, 4), scores (K,), labels (K,)}``, best first (``test_cfg``)."""
        return [self._detections_one(image.float(), level_sizes) for image in dense]

    def _detections_one(self, dense: Tensor, level_sizes: Sequence[int]) -> dict[str, Tensor]:
        cfg, c = self.test_cfg, self.num_classes
        kept_boxes, kept_scores, kept_labels = [], [], []
        start = 0
        for size in level_sizes:
            part = dense[start : start + size]
            start += size
            scores = part[:, 4 : 4 + c]
            above = scores > cfg.score_thr
            values = scores[above]
            where = above.nonzero()
            if 0 < cfg.nms_pre < values.numel():
                values, order = values.topk(cfg.nms_pre)
                where = where[order]
            prior, label = where.unbind(1)
            if self.has_score_factor:
                values = values * part[prior, 4 + c]
            kept_boxes.append(part[prior, :4])
            kept_scores.append(values)
            kept_labels.append(label)
        boxes, scores, labels = (torch.cat(t) for t in (kept_boxes, kept_scores, kept_labels))
        if cfg.min_bbox_size >= 0:
            big = (boxes[:, 2] - boxes[:, 0] > cfg.min_bbox_size) & (
                boxes[:, 3] - boxes[:, 1] > cfg.min_bbox_size
            )
            boxes, scores, labels = boxes[big], scores[big], labels[big]
        if cfg.nms.class_agnostic:
            keep = nms(boxes, scores, cfg.nms.iou_threshold)
        else:
            keep = batched_nms(boxes, scores, labels, cfg.nms.iou_threshold)
        keep = keep[: cfg.max_per_img]  # NMS returns them best first
        return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
