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
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import attrs
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchvision.ops import batched_nms, nms

from okc.config.params import given
from okc.errors import OkcError, ParamError
from okc.models.detection.assign import IGNORED
from okc.models.detection.configs import RELU, NormCfg, TestCfg
from okc.models.detection.layers import ConvNormAct

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


@attrs.frozen(kw_only=True)
class HeadParams:
    """What every detection head takes (``in_channels``/``in_strides`` come from okc)."""

    num_classes: int

    def __attrs_post_init__(self) -> None:
        if self.num_classes < 1:
            raise ParamError("num_classes", f"must be at least 1, got {self.num_classes}")


@attrs.frozen(kw_only=True)
class DenseParams(HeadParams):
    """The tower of a dense head (FCOS's, RetinaNet's): ``stacked_convs`` 3x3 convs of
    ``feat_channels`` (``norm_cfg``, ReLU; a conv bias "auto": only without a norm) for the
    classification and the regression branch each, and the post-processing ``test_cfg``."""

    feat_channels: int = 256
    stacked_convs: int = 4
    conv_bias: bool | Literal["auto"] = "auto"
    norm_cfg: NormCfg | None = None
    test_cfg: TestCfg = TestCfg()

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if self.feat_channels < 1 or self.stacked_convs < 0:
            raise ParamError("feat_channels", "need feat_channels >= 1 and stacked_convs >= 0")


class DenseHead(nn.Module):
    """Base of okc's detection heads; see the module docstring for the contract.

    Built from its ``Params`` instance (what okc does) or, from Python, from their keys as plain
    data or cfg instances: ``FCOSHead(num_classes=3, in_channels=256, in_strides=[8, 16])``.
    """

    #: the task outputs ``loss_inputs`` gives (what joint_loss mappings may name)
    loss_keys: ClassVar[tuple[str, ...]] = ()
    #: whether ``decode`` appends a score factor (multiplied into the class scores before NMS)
    has_score_factor: ClassVar[bool] = False
    Params: ClassVar[type] = DenseParams

    def __init__(
        self, params: Any = None, /, *, in_channels: int, in_strides: Sequence[int], **keys: Any
    ) -> None:
        super().__init__()
        self.params = given(type(self), params, keys)
        self.num_classes = self.params.num_classes
        self.in_channels = in_channels
        self.strides = [int(s) for s in in_strides]
        self.test_cfg = self.params.test_cfg

    def _check_strides(self, strides: Sequence[int] | None, key: str) -> None:
        if strides is not None and [int(s) for s in strides] != self.strides:
            raise ParamError(
                key,
                f"{list(strides)} but the neck gives maps at strides {self.strides}; fix "
                "the strides or the neck (num_scales, start_level, num_outs)",
            )

    def _towers(self) -> int:
        """The classification and regression towers (``cls_convs``, ``reg_convs``); returns
        the channels they give."""
        p, width = self.params, self.in_channels

        def tower() -> nn.Sequential:
            return nn.Sequential(*(
                ConvNormAct(width if i == 0 else p.feat_channels, p.feat_channels, 3,
                            norm=p.norm_cfg, act=RELU, bias=p.conv_bias)
                for i in range(p.stacked_convs)
            ))  # fmt: skip

        self.cls_convs, self.reg_convs = tower(), tower()
        return p.feat_channels if p.stacked_convs else width

    def _init_weights(self, classifier: nn.Conv2d) -> None:
        """mmdet's init: N(0, 0.01) convs, zero biases, the classifier biased to p = 0.01."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(classifier.bias, prior_probability_bias())

    def _check_levels(self, features: Sequence[Tensor]) -> None:
        if len(features) != len(self.strides):
            raise ValueError(
                f"{type(self).__name__} has {len(self.strides)} levels, got {len(features)} maps"
            )

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

    # --- training ------------------------------------------------------------------------------

    def _reduce(self, value: Tensor) -> Tensor:
        # Only in training: evaluation loaders may hold different batch counts per process.
        return reduce_mean(value) if self.training else value

    def _targets(
        self, matched: Tensor, boxes: Tensor, classes: Tensor, unmatched: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Per prior its label (``num_classes``: background, -1: ignored) and the box it
        learns (``unmatched`` when the image has no boxes), from the assigner's ``matched``."""
        label = torch.full_like(matched, self.num_classes)
        box = unmatched
        if boxes.shape[0]:
            label = torch.where(matched >= 0, classes.to(matched)[matched.clamp(min=0)], label)
            box = boxes[matched.clamp(min=0)]
        return label.masked_fill(matched == IGNORED, -1), box

    def _positives(self, flat_labels: Tensor) -> tuple[Tensor, Tensor]:
        """The indices of positive priors and their count (mean over processes, at least 1)."""
        pos = ((flat_labels >= 0) & (flat_labels < self.num_classes)).nonzero().squeeze(1)
        count = pos.new_tensor(pos.numel(), dtype=torch.float32)
        return pos, self._reduce(count).clamp(min=1.0)

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
