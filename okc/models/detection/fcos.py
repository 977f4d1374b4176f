"""FCOS (Tian et al., 2019): anchor-free, one prediction per feature-map location, with
centerness. okc's own module following mmdet's FCOSHead, which TorchOk wrapped.

Loss inputs (the names TorchOk's FCOS configs map, as mmdet computed them):

- ``flatten_cls_scores`` (M, C) logits of every location of every image; ``flatten_labels`` (M,)
  its class, ``C`` for background, -1 for a location ``train_cfg.assigner`` ignores;
- ``num_pos`` (scalar): positive locations (mean over training processes, at least 1);
- ``pos_decoded_bbox_preds`` / ``pos_decoded_target_preds`` (P, 4): predicted and target boxes
  of the positive locations (with ``norm_on_bbox`` in stride units around the location);
- ``pos_centerness`` (P,) centerness logits; ``pos_centerness_targets`` (P,) their targets in
  [0, 1]; ``centerness_denorm`` (scalar): their sum (mean over processes, at least 1e-6).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import Tensor, nn
from torchvision.ops import clip_boxes_to_image

from okc.errors import ParamError
from okc.models.detection.assign import IGNORED, fcos_assign, inside_image, max_iou_assign
from okc.models.detection.configs import NormCfg, TrainCfg
from okc.models.detection.dense import DenseHead, DenseParams, check_labels, flatten_levels
from okc.models.detection.layers import Scale

INF = 1e8


def default_ranges(strides: Sequence[int]) -> list[tuple[float, float]]:
    """mmdet's ``regress_ranges`` for any levels: level l takes boxes reaching up to 8 strides
    from a location (64, 128, 256, 512 for strides 8..64), the last level everything beyond."""
    bounds = [8.0 * s for s in strides[:-1]]
    return list(zip([-1.0, *bounds], [*bounds, INF], strict=True))


def centerness_target(distances: Tensor) -> Tensor:
    """sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) of (P, 4) ltrb distances."""
    if distances.numel() == 0:
        return distances.new_zeros(0)
    lr, tb = distances[:, [0, 2]], distances[:, [1, 3]]
    ratio = (lr.amin(-1) / lr.amax(-1).clamp(min=1e-12)) * (
        tb.amin(-1) / tb.amax(-1).clamp(min=1e-12)
    )
    return ratio.clamp(min=0).sqrt()


def distance_to_box(points: Tensor, distances: Tensor) -> Tensor:
    """Locations (..., 2) and ltrb distances (..., 4) → xyxy boxes (..., 4)."""
    return torch.cat([points - distances[..., :2], points + distances[..., 2:]], dim=-1)


def grid_points(height: int, width: int, stride: int, *, like: Tensor) -> Tensor:
    """Centres of a level's cells in input pixels, row by row: (H * W, 2) as (x, y)."""
    ys = (torch.arange(height, device=like.device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, device=like.device, dtype=torch.float32) + 0.5) * stride
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)


class FCOSHead(DenseHead):
    """FCOS head with mmdet's parameters.

    Args:
        num_classes: object classes (no background class).
        in_channels, in_strides: the neck's channels and level strides (supplied by okc).
        strides: the level strides the config expects (checked against the neck's; default:
            the neck's).
        feat_channels, stacked_convs: width and depth of the classification and regression towers.
        regress_ranges: per level ``[low, high]``: which box sizes (largest distance from a
            location to a box side) the level learns; default mmdet's, generalised to any levels.
        center_sampling, center_sample_radius: only locations within this many strides of a box
            centre are positives.
        norm_on_bbox: regress distances in stride units (through a ReLU instead of exp).
        centerness_on_reg: centerness from the regression tower (else the classification one).
        conv_bias: bias in the tower convs: "auto" (only without a norm), true or false.
        norm_cfg: the towers' norm (mmdet's FCOS default: GroupNorm of 32 groups).
        train_cfg: ``{assigner: {type: MaxIoUAssigner, ...}}`` to assign by the IoU of a square
            prior box of ``prior_scale`` strides centred on each location (the ATSS paper's
            IoU-based FCOS) instead of by location and range; positives must also lie inside
            their box, and ``allowed_border`` ignores priors reaching out of the image. mmdet's
            FCOSHead ignored this setting; okc uses it.
        test_cfg: post-processing (``okc.models.detection.configs.TestCfg``).
        prior_scale: the prior box side in strides for ``train_cfg.assigner`` (default 8).
    """

    loss_keys = (
        "flatten_cls_scores", "flatten_labels", "num_pos", "pos_decoded_bbox_preds",
        "pos_decoded_target_preds", "pos_centerness_targets", "centerness_denorm",
        "pos_centerness",
    )  # fmt: skip
    has_score_factor = True

    @attrs.frozen(kw_only=True)
    class Params(DenseParams):
        strides: tuple[int, ...] | None = None
        regress_ranges: tuple[tuple[float, float], ...] | None = None
        center_sampling: bool = False
        center_sample_radius: float = 1.5
        norm_on_bbox: bool = False
        centerness_on_reg: bool = False
        norm_cfg: NormCfg | None = NormCfg(type="GN", num_groups=32)
        train_cfg: TrainCfg = TrainCfg()
        prior_scale: float | None = None

        def __attrs_post_init__(self) -> None:
            """FCOS assigns by location and range, or (with ``train_cfg.assigner``) by prior-box
            IoU; each rule's settings are refused under the other, where they would do nothing."""
            super().__attrs_post_init__()
            by_iou = self.train_cfg.assigner is not None
            if not by_iou and self.prior_scale is not None:
                raise ParamError("prior_scale", "only applies with train_cfg.assigner; remove it")
            if not by_iou and self.train_cfg.allowed_border != -1:
                raise ParamError("train_cfg.allowed_border", "only applies with train_cfg.assigner")
            range_keys = [k for k in ("regress_ranges", "center_sampling") if getattr(self, k)]
            if by_iou and range_keys:
                raise ParamError(
                    range_keys[0],
                    "FCOS's location/range assignment is replaced by train_cfg.assigner "
                    "(MaxIoUAssigner); remove one of them",
                )

    def __init__(self, params: Params | None = None, /, **keys: Any) -> None:
        super().__init__(params, **keys)
        p = self.params
        self._check_strides(p.strides, "strides")
        ranges = default_ranges(self.strides) if p.regress_ranges is None else p.regress_ranges
        if len(ranges) != len(self.strides):
            raise ParamError(
                "regress_ranges",
                f"expected one [low, high] per level ({len(self.strides)} levels), got "
                f"{[list(r) for r in ranges]}",
            )
        self.regress_ranges = [(float(lo), float(hi)) for lo, hi in ranges]
        self.train_cfg = p.train_cfg
        self.prior_scale = 8.0 if p.prior_scale is None else float(p.prior_scale)
        self.center_sampling, self.radius = p.center_sampling, p.center_sample_radius
        self.norm_on_bbox, self.centerness_on_reg = p.norm_on_bbox, p.centerness_on_reg
        width = self._towers()
        self.conv_cls = nn.Conv2d(width, p.num_classes, 3, padding=1)
        self.conv_reg = nn.Conv2d(width, 4, 3, padding=1)
        self.conv_centerness = nn.Conv2d(width, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        self._init_weights(self.conv_cls)

    # --- forward -------------------------------------------------------------------------------

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], ...]:
        """Per level: class logits (B, C, H, W), ltrb distances (B, 4, H, W) (stride units with
        ``norm_on_bbox``, else pixels), centerness logits (B, 1, H, W)."""
        self._check_levels(features)
        cls_scores, bbox_preds, centernesses = [], [], []
        for x, scale in zip(features, self.scales, strict=True):
            cls_feat, reg_feat = self.cls_convs(x), self.reg_convs(x)
            cls_scores.append(self.conv_cls(cls_feat))
            distance = scale(self.conv_reg(reg_feat)).float()  # exp overflows float16
            bbox_preds.append(distance.clamp(min=0) if self.norm_on_bbox else distance.exp())
            centernesses.append(
                self.conv_centerness(reg_feat if self.centerness_on_reg else cls_feat)
            )
        return cls_scores, bbox_preds, centernesses

    def _points(self, raw: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Every location (N, 2), its stride (N,) and its level's regress range (N, 2)."""
        cls_scores = raw[0]
        points, strides, ranges = [], [], []
        for m, stride, rng in zip(cls_scores, self.strides, self.regress_ranges, strict=True):
            p = grid_points(m.shape[-2], m.shape[-1], stride, like=m)
            points.append(p)
            strides.append(p.new_full((p.shape[0],), float(stride)))
            ranges.append(p.new_tensor(rng).expand(p.shape[0], 2))
        return torch.cat(points), torch.cat(strides), torch.cat(ranges)

    def level_sizes(self, raw: Any) -> list[int]:
        return [m.shape[-2] * m.shape[-1] for m in raw[0]]

    def _distances(self, bbox_preds: Sequence[Tensor]) -> Tensor:
        """(B, N, 4) distances in pixels."""
        if not self.norm_on_bbox:
            return flatten_levels(bbox_preds, 4)
        return flatten_levels([d * s for d, s in zip(bbox_preds, self.strides, strict=True)], 4)

    def decode(self, raw: Any, image_size: Sequence[int]) -> Tensor:
        """(B, N, 4 + C + 1): boxes in pixels (clipped to the image), class probabilities,
        centerness probability."""
        cls_scores, bbox_preds, centernesses = raw
        points = self._points(raw)[0]
        boxes = distance_to_box(points[None], self._distances(bbox_preds))
        boxes = clip_boxes_to_image(boxes, (image_size[0], image_size[1]))
        scores = flatten_levels(cls_scores, self.num_classes).float().sigmoid()
        centerness = flatten_levels(centernesses, 1).float().sigmoid()
        return torch.cat([boxes, scores, centerness], dim=-1)

    # --- training ------------------------------------------------------------------------------

    def _assign(
        self, points: Tensor, strides: Tensor, ranges: Tensor, boxes: Tensor,
        image_size: Sequence[int],
    ) -> Tensor:  # fmt: skip
        if self.train_cfg.assigner is None:
            return fcos_assign(
                points, strides, ranges, boxes, center_sampling=self.center_sampling,
                radius=self.radius,
            )  # fmt: skip
        half = strides[:, None] * self.prior_scale / 2
        priors = torch.cat([points - half, points + half], dim=-1)
        valid = None
        if self.train_cfg.allowed_border >= 0:
            height, width = int(image_size[0]), int(image_size[1])
            valid = inside_image(priors, height, width, self.train_cfg.allowed_border)
        matched = max_iou_assign(priors, boxes, self.train_cfg.assigner, valid=valid)
        if boxes.shape[0] == 0:
            return matched
        positive = matched >= 0
        target = boxes[matched.clamp(min=0)]
        inside = (points > target[:, :2]).all(-1) & (points < target[:, 2:]).all(-1)
        return torch.where(positive & ~inside, torch.full_like(matched, IGNORED), matched)

    @torch.compiler.disable  # per-image assignment has data-dependent shapes
    def loss_inputs(
        self, raw: Any, gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor],
        image_size: Sequence[int],
    ) -> dict[str, Tensor]:  # fmt: skip
        check_labels(gt_labels, self.num_classes)
        points, strides, ranges = self._points(raw)
        labels, targets = [], []
        for boxes, classes in zip(gt_boxes, gt_labels, strict=True):
            boxes = boxes.to(points.device, torch.float32).reshape(-1, 4)
            matched = self._assign(points, strides, ranges, boxes, image_size)
            label, box = self._targets(matched, boxes, classes, points.new_zeros(len(points), 4))
            labels.append(label)
            distance = torch.cat([points - box[:, :2], box[:, 2:] - points], dim=-1)
            targets.append(distance / strides[:, None] if self.norm_on_bbox else distance)
        return self._gather(raw, points, torch.stack(labels), torch.stack(targets))

    def _gather(
        self, raw: Any, points: Tensor, labels: Tensor, targets: Tensor
    ) -> dict[str, Tensor]:
        cls_scores, bbox_preds, centernesses = raw
        batch = labels.shape[0]
        flat_cls = flatten_levels(cls_scores, self.num_classes).reshape(-1, self.num_classes)
        flat_pred = flatten_levels(bbox_preds, 4).reshape(-1, 4)
        flat_ctr = flatten_levels(centernesses, 1).reshape(-1)
        flat_labels = labels.reshape(-1)
        flat_targets = targets.reshape(-1, 4)
        flat_points = points.repeat(batch, 1)
        pos, num_pos = self._positives(flat_labels)
        pos_targets = flat_targets[pos]
        ctr_targets = centerness_target(pos_targets)
        denorm = self._reduce(ctr_targets.sum().detach()).clamp(min=1e-6)
        pos_points = flat_points[pos]
        return {
            "flatten_cls_scores": flat_cls.float(),
            "flatten_labels": flat_labels,
            "num_pos": num_pos,
            "pos_decoded_bbox_preds": distance_to_box(pos_points, flat_pred[pos].float()),
            "pos_decoded_target_preds": distance_to_box(pos_points, pos_targets),
            "pos_centerness_targets": ctr_targets,
            "centerness_denorm": denorm,
            "pos_centerness": flat_ctr[pos].float(),
        }
