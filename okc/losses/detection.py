"""mmdet's detection losses under TorchOk's names (``MMFocalLoss``, ``MMIoULoss``, ...).

TorchOk registered every mmdet loss as ``MM<Name>``; detection configs map task outputs onto
mmdet's forward arguments (``pred``, ``target``, ``weight``, ``avg_factor``; ``cls_score``,
``label`` for cross-entropy). okc keeps those names, parameters and mmdet's reduction rule:

    loss = loss_weight * reduce(elementwise_loss * weight)

where reduce is ``sum / avg_factor`` when ``avg_factor`` is given (``reduction: mean``), else
the plain ``mean``/``sum``/``none``. Where mmdet would return NaN for no elements (the mean of
nothing: an image with no boxes has no positives) these return a zero that keeps the graph.
The elementwise losses come from torchvision (``sigmoid_focal_loss``,
``generalized_box_iou_loss``) and torch; the aligned IoU is a few lines here because torchvision
only exposes pairwise IoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from okc.errors import ParamError
from okc.registry import LOSSES

Reduction = Literal["none", "mean", "sum"]
_EPS = torch.finfo(torch.float32).eps


def weight_reduce(
    loss: Tensor,
    weight: Tensor | None,
    avg_factor: Tensor | float | None,
    reduction: Reduction,
) -> Tensor:
    """mmdet's ``weight_reduce_loss``, finite on empty inputs."""
    if weight is not None:
        weight = weight.to(loss.dtype)
        while weight.dim() < loss.dim():
            weight = weight.unsqueeze(-1)
        loss = loss * weight
    if avg_factor is not None:
        if reduction == "mean":
            return loss.sum() / (avg_factor + _EPS)
        if reduction == "sum":
            raise ValueError('avg_factor cannot be used with reduction "sum"')
        return loss
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum()
    return loss.sum() if reduction == "sum" else loss


class _MMLoss(nn.Module):
    def __init__(self, *, reduction: Reduction, loss_weight: float) -> None:
        super().__init__()
        self.reduction, self.loss_weight = reduction, loss_weight


@LOSSES.register
class MMFocalLoss(_MMLoss):
    """Sigmoid focal loss (mmdet's FocalLoss) on ``pred`` (N, C) logits.

    ``target`` is (N,) class indices, where ``C`` means background and a negative label (an
    ignored prior) adds nothing, or (N, C) one-hot/soft targets. ``weight`` is (N,) or (N, C).
    ``activated: true`` takes probabilities instead of logits. Built on torchvision's
    ``sigmoid_focal_loss``.
    """

    def __init__(
        self,
        *,
        use_sigmoid: bool = True,
        gamma: float = 2.0,
        alpha: float = 0.25,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
        activated: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        if not use_sigmoid:
            raise ParamError("use_sigmoid", "only the sigmoid focal loss exists (as in mmdet)")
        self.gamma, self.alpha, self.activated = gamma, alpha, activated

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: Tensor | float | None = None,
    ) -> Tensor:
        pred = pred.float()
        valid = None
        if target.dim() == pred.dim() - 1:
            valid = (target >= 0).to(pred.dtype)[:, None]
            classes = pred.shape[-1]
            target = F.one_hot(target.clamp(min=0), classes + 1)[:, :classes]
        target = target.to(pred.dtype)
        if self.activated:
            loss = _focal_on_probabilities(pred, target, self.gamma, self.alpha)
        else:
            loss = sigmoid_focal_loss(pred, target, self.alpha, self.gamma, reduction="none")
        if valid is not None:
            loss = loss * valid
        return self.loss_weight * weight_reduce(loss, weight, avg_factor, self.reduction)


def _focal_on_probabilities(prob: Tensor, target: Tensor, gamma: float, alpha: float) -> Tensor:
    """torchvision's focal loss formula for inputs that are probabilities already."""
    ce = F.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss


def aligned_iou(pred: Tensor, target: Tensor, eps: float) -> Tensor:
    """IoU of each (N, 4) xyxy ``pred`` box with the same row of ``target``."""
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_p = (pred[:, 2:] - pred[:, :2]).clamp(min=0).prod(-1)
    area_t = (target[:, 2:] - target[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_p + area_t - inter).clamp(min=eps)


class _BoxLoss(_MMLoss):
    """mmdet's box losses share ``(pred, target, weight, avg_factor)`` and its weight rules: a
    (N, 4) weight is averaged per box, and all-zero weights give a zero loss."""

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: Tensor | float | None = None,
    ) -> Tensor:
        pred, target = pred.float(), target.float()
        if weight is not None and weight.dim() > 1:
            weight = weight.mean(-1)
        if pred.shape[0] == 0:
            return pred.sum() * 0.0
        loss = self.elementwise(pred, target)
        return self.loss_weight * weight_reduce(loss, weight, avg_factor, self.reduction)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError


@LOSSES.register
class MMIoULoss(_BoxLoss):
    """IoU loss on (N, 4) xyxy boxes: ``mode`` log (-ln IoU, mmdet's default), linear
    (1 - IoU) or square (1 - IoU²); ``linear: true`` is mmdet's old spelling of linear."""

    def __init__(
        self,
        *,
        linear: bool = False,
        eps: float = 1e-6,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
        mode: Literal["linear", "square", "log"] = "log",
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.mode, self.eps = ("linear" if linear else mode), eps

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        iou = aligned_iou(pred, target, self.eps).clamp(min=self.eps)
        if self.mode == "linear":
            return 1 - iou
        if self.mode == "square":
            return 1 - iou**2
        return -iou.log()


@LOSSES.register
class MMGIoULoss(_BoxLoss):
    """Generalized IoU loss (torchvision's ``generalized_box_iou_loss``) on (N, 4) xyxy boxes."""

    def __init__(
        self, *, eps: float = 1e-6, reduction: Reduction = "mean", loss_weight: float = 1.0
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.eps = eps

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        return generalized_box_iou_loss(pred, target, reduction="none", eps=self.eps)


@LOSSES.register
class MML1Loss(_BoxLoss):
    """L1 loss, elementwise over (N, 4) (mmdet's L1Loss; a (N,) weight applies per box)."""

    def __init__(self, *, reduction: Reduction = "mean", loss_weight: float = 1.0) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: Tensor | float | None = None,
    ) -> Tensor:
        pred, target = pred.float(), target.float()
        if pred.numel() == 0:
            return pred.sum() * 0.0
        loss = (pred - target).abs()
        return self.loss_weight * weight_reduce(loss, weight, avg_factor, self.reduction)


@LOSSES.register
class MMCrossEntropyLoss(_MMLoss):
    """mmdet's CrossEntropyLoss on ``cls_score`` and ``label``.

    ``use_sigmoid: false``: softmax cross-entropy of (N, C) logits and (N,) class indices, with
    ``class_weight`` and ``ignore_index`` (default -100); ``avg_non_ignore`` averages over the
    labels not ignored. ``use_sigmoid: true``: binary cross-entropy with logits, labels (N,) or
    (N, C) in [0, 1] (FCOS's centerness) or (N,) class indices of (N, C) scores; labels equal to
    ``ignore_index`` or negative add nothing. ``use_mask`` (mask heads) is not supported.
    """

    def __init__(
        self,
        *,
        use_sigmoid: bool = False,
        use_mask: bool = False,
        reduction: Reduction = "mean",
        class_weight: Sequence[float] | float | None = None,
        ignore_index: int | None = None,
        loss_weight: float = 1.0,
        avg_non_ignore: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        if use_mask:
            raise ParamError("use_mask", "mask cross-entropy (instance segmentation) is not in okc")
        self.use_sigmoid, self.avg_non_ignore = use_sigmoid, avg_non_ignore
        self.ignore_index = -100 if ignore_index is None else ignore_index
        weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float)
        self.scale = 1.0
        if weight is not None and weight.dim() == 0:  # one weight for every class: a factor
            self.scale, weight = float(weight), None
        self.register_buffer("class_weight", weight, persistent=False)

    def forward(
        self,
        cls_score: Tensor,
        label: Tensor,
        weight: Tensor | None = None,
        avg_factor: Tensor | float | None = None,
    ) -> Tensor:
        cls_score = cls_score.float()
        if cls_score.shape[0] == 0:
            return cls_score.sum() * 0.0
        if self.use_sigmoid:
            loss, valid = self._binary(cls_score, label)
        else:
            loss = F.cross_entropy(
                cls_score, label.long(), weight=self.class_weight, reduction="none",
                ignore_index=self.ignore_index,
            )  # fmt: skip
            valid = label != self.ignore_index
        if self.avg_non_ignore and avg_factor is None and self.reduction == "mean":
            avg_factor = valid.sum().float()
        reduced = weight_reduce(loss, weight, avg_factor, self.reduction)
        return self.scale * self.loss_weight * reduced

    def _binary(self, score: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        if label.dim() == score.dim():  # soft or one-hot targets of the same shape
            valid = torch.ones_like(score, dtype=torch.bool)
            target = label.to(score.dtype)
        else:  # class indices of (N, C) scores; out-of-range labels (background) are all-zero
            valid = (label >= 0) & (label != self.ignore_index)
            classes = score.shape[-1]
            index = torch.where(valid & (label < classes), label, classes).long()
            target = F.one_hot(index, classes + 1)[:, :classes].to(score.dtype)
            valid = valid[:, None].expand_as(score)
        loss = F.binary_cross_entropy_with_logits(
            score, target, pos_weight=self.class_weight, reduction="none"
        )
        return loss * valid.to(loss.dtype), valid
