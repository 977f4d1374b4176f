"""DETR's one-to-one matching of queries to ground-truth boxes (mmdet's ``HungarianAssigner``).

The cost of giving query q box g is ``cls_cost + reg_cost + iou_cost`` (``HungarianAssignerCfg``);
the assignment of least total cost is scipy's ``linear_sum_assignment`` (the Jonker-Volgenant
solver mmdet and DETR use) on the CPU. Costs are computed on the device for every image and
decoder layer first and copied to the CPU in one transfer: one sync per training step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou, generalized_box_iou

from okc.errors import OkcError
from okc.models.detection.detr_configs import HungarianAssignerCfg


def match_cost(
    cls_logits: Tensor,
    boxes: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    image_size: Sequence[int],
    cfg: HungarianAssignerCfg,
) -> Tensor:
    """(Q, G) cost of each query for each box.

    ``cls_logits`` (Q, C + 1) with background last; ``boxes`` (Q, 4) the predicted normalised
    ``cx, cy, w, h``; ``gt_boxes`` (G, 4) ``x1, y1, x2, y2`` in pixels of ``image_size`` (H, W).
    """
    height, width = float(image_size[0]), float(image_size[1])
    factor = boxes.new_tensor([width, height, width, height])
    cls_cost = -cls_logits.float().softmax(-1)[:, gt_labels.long()]
    gt_norm = gt_boxes.float() / factor
    pred = boxes.float()
    if cfg.box_format == "xywh":
        gt_norm = box_convert(gt_norm, "xyxy", "cxcywh")
    else:
        pred = box_convert(pred, "cxcywh", "xyxy")
    reg_cost = torch.cdist(pred, gt_norm, p=1)
    pred_pixels = box_convert(boxes.float(), "cxcywh", "xyxy") * factor
    overlap = generalized_box_iou if cfg.iou_mode == "giou" else box_iou
    iou_cost = -overlap(pred_pixels, gt_boxes.float())
    return (
        cfg.cls_cost.weight * cls_cost
        + cfg.reg_cost.weight * reg_cost
        + cfg.iou_cost.weight * iou_cost
    )


def hungarian_match(costs: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """Per (Q, G) cost matrix, the matched ``(query indices, box indices)`` of least total cost
    (``min(Q, G)`` pairs, on the costs' device)."""
    # scipy is imported here, not at module import: it takes a while and only training needs it.
    from scipy.optimize import linear_sum_assignment

    if not costs:
        return []
    device = costs[0].device
    flat = torch.cat([c.detach().reshape(-1) for c in costs]).float().cpu()  # sync point
    if not torch.isfinite(flat).all():
        raise OkcError(
            "DETR matching costs are not finite: the head's outputs hold NaN or inf (training "
            "diverged; lower the learning rate or use gradient clipping)"
        )
    matches, start = [], 0
    for cost in costs:
        size = cost.numel()
        matrix = flat[start : start + size].reshape(cost.shape).numpy()
        start += size
        rows, cols = linear_sum_assignment(matrix)
        matches.append((
            torch.as_tensor(rows, dtype=torch.long, device=device),
            torch.as_tensor(cols, dtype=torch.long, device=device),
        ))  # fmt: skip
    return matches
