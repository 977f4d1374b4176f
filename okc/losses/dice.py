"""Soft Dice loss for segmentation, with TorchOk's semantics (pytorch-toolbelt's formulation).

Per class c, over the batch and all pixels: ``dice_c = (2·Σ p·t + smooth) / (max(Σ(p + t), eps) +
smooth)``; the loss is ``1 - dice_c`` (or ``-log dice_c``), zero for classes with no positive pixel
in the batch (Dice is undefined there), averaged over the classes. ``classes`` selects the classes
that count (broken in TorchOk); ``ignore_index`` (okc) drops pixels whose target equals it, in
every mode: their probabilities and targets count as zero. Everything is masking and reductions over
static shapes, so it compiles with ``fullgraph=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from okc.registry import LOSSES

Mode = Literal["binary", "multiclass", "multilabel"]


@LOSSES.register
class DiceLoss(nn.Module):
    """Dice loss from logits (or probabilities with ``from_logits=False``).

    Shapes: binary ``input`` (N, *) or (N, 1, *) with a 0/1 ``target`` of the same number of
    elements; multiclass ``input`` (N, C, *) with class ids ``target`` (N, *); multilabel ``input``
    and ``target`` both (N, C, *).
    """

    def __init__(
        self,
        *,
        mode: Mode,
        classes: Sequence[int] | None = None,
        log_loss: bool = False,
        from_logits: bool = True,
        smooth: float = 0.0,
        eps: float = 1e-7,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        if classes is not None and mode == "binary":
            raise ValueError("classes cannot be chosen in binary mode (there is one class)")
        self.mode = mode
        self.log_loss = log_loss
        self.from_logits = from_logits
        self.smooth = smooth
        self.eps = eps
        self.ignore_index = ignore_index
        chosen = None if classes is None else torch.tensor(list(classes), dtype=torch.long)
        self.register_buffer("classes", chosen, persistent=False)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs, truth = self._flat(input, target)  # both (N, C, P)
        inter = (probs * truth).sum((0, 2))
        card = (probs + truth).sum((0, 2))
        dice = (2 * inter + self.smooth) / (card.clamp_min(self.eps) + self.smooth)
        loss = -torch.log(dice.clamp_min(self.eps)) if self.log_loss else 1 - dice
        loss = loss * (truth.sum((0, 2)) > 0).to(loss.dtype)
        if self.classes is not None:
            loss = loss.index_select(0, self.classes)
        return loss.mean()

    def _flat(self, input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = input.shape[0]
        if self.mode == "multiclass":
            num_classes = input.shape[1]
            probs = input.softmax(dim=1) if self.from_logits else input
            probs = probs.reshape(n, num_classes, -1)
            ids = target.reshape(n, -1).long()
            if self.ignore_index is None:
                truth = F.one_hot(ids, num_classes).permute(0, 2, 1).to(probs.dtype)
                return probs, truth
            keep = (ids != self.ignore_index).unsqueeze(1)
            ids = torch.where(keep.squeeze(1), ids, torch.zeros_like(ids))
            truth = F.one_hot(ids, num_classes).permute(0, 2, 1) * keep
            return probs * keep, truth.to(probs.dtype)
        channels = 1 if self.mode == "binary" else input.shape[1]
        probs = input.sigmoid() if self.from_logits else input
        probs = probs.reshape(n, channels, -1)
        truth = target.reshape(n, channels, -1)
        if self.ignore_index is None:
            return probs, truth.to(probs.dtype)
        keep = truth != self.ignore_index
        return probs * keep, torch.where(keep, truth, torch.zeros_like(truth)).to(probs.dtype)
