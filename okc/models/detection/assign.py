"""Which prior (an FCOS location, a RetinaNet anchor) learns which ground-truth box, per image.

Both rules return ``matched`` (P,) int64: the index of the box a prior learns, ``NEGATIVE`` for
background, or ``IGNORED`` for priors that add nothing to the classification loss. They loop over
images in Python: box counts differ per image, and the per-image tensors are small.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou

from okc.models.detection.configs import AssignerCfg

NEGATIVE = -1
IGNORED = -2
INF = 1e8


def max_iou_assign(
    priors: Tensor, gt_boxes: Tensor, cfg: AssignerCfg, *, valid: Tensor | None = None
) -> Tensor:
    """mmdet's MaxIoUAssigner on ``priors`` (P, 4) xyxy against ``gt_boxes`` (G, 4).

    ``valid`` (P,) bool marks priors that may learn anything (others are ignored).
    """
    num = priors.shape[0]
    matched = torch.full((num,), IGNORED, dtype=torch.long, device=priors.device)
    if gt_boxes.shape[0] == 0:
        matched.fill_(NEGATIVE)
    else:
        iou = box_iou(gt_boxes.float(), priors.float())  # (G, P)
        best, best_gt = iou.max(dim=0)
        low, high = cfg.negative_range
        matched[(best >= low) & (best < high)] = NEGATIVE
        positive = best >= cfg.pos_iou_thr
        matched[positive] = best_gt[positive]
        if cfg.match_low_quality:
            gt_best, gt_best_prior = iou.max(dim=1)
            for g in range(gt_boxes.shape[0]):  # later boxes win ties, as in mmdet
                # mmdet also matched a box that overlaps no prior at all (IoU 0 >= min_pos_iou 0)
                # to every prior it does not overlap; okc requires some overlap.
                if gt_best[g] <= 0 or gt_best[g] < cfg.min_pos_iou:
                    continue
                if cfg.gt_max_assign_all:
                    matched[iou[g] == gt_best[g]] = g
                else:
                    matched[gt_best_prior[g]] = g
    if valid is not None:
        matched[~valid] = IGNORED
    return matched


def fcos_assign(
    points: Tensor,
    strides: Tensor,
    ranges: Tensor,
    gt_boxes: Tensor,
    *,
    center_sampling: bool,
    radius: float,
) -> Tensor:
    """FCOS's rule: a location learns the smallest box it lies in (with ``center_sampling``: in
    the box's centre region of ``radius`` strides), whose largest side distance from it is within
    the location's level range. ``points`` (P, 2), ``strides`` (P,), ``ranges`` (P, 2)."""
    num, num_gts = points.shape[0], gt_boxes.shape[0]
    if num_gts == 0:
        return torch.full((num,), NEGATIVE, dtype=torch.long, device=points.device)
    boxes = gt_boxes.float()[None]  # (1, G, 4)
    xs, ys = points[:, 0, None], points[:, 1, None]  # (P, 1)
    distances = torch.stack(
        [xs - boxes[..., 0], ys - boxes[..., 1], boxes[..., 2] - xs, boxes[..., 3] - ys], dim=-1
    )  # (P, G, 4)
    if center_sampling:
        cx, cy = (boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2
        r = strides[:, None] * radius
        x1 = torch.maximum(cx - r, boxes[..., 0])
        y1 = torch.maximum(cy - r, boxes[..., 1])
        x2 = torch.minimum(cx + r, boxes[..., 2])
        y2 = torch.minimum(cy + r, boxes[..., 3])
        inside = torch.stack([xs - x1, ys - y1, x2 - xs, y2 - ys], dim=-1).amin(-1) > 0
    else:
        inside = distances.amin(-1) > 0
    reach = distances.amax(-1)
    in_range = (reach >= ranges[:, 0, None]) & (reach <= ranges[:, 1, None])
    areas = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])).expand(num, -1)
    areas = areas.masked_fill(~(inside & in_range), INF)
    smallest, which = areas.min(dim=1)
    return torch.where(smallest < INF, which, torch.full_like(which, NEGATIVE))


def inside_image(priors: Tensor, height: int, width: int, border: float) -> Tensor:
    """Priors within ``border`` pixels of the image (mmdet's ``allowed_border``)."""
    return (
        (priors[:, 0] >= -border)
        & (priors[:, 1] >= -border)
        & (priors[:, 2] < width + border)
        & (priors[:, 3] < height + border)
    )
