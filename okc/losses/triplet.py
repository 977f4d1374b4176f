"""TripletMarginLoss: torch's loss on the given triplets, or on triplets mined in the batch.

TorchOk's ``triplet_sop`` config maps ``anchor``, ``positive`` and ``negative`` (the outputs of
``TripletLearnTask``) to torch's ``TripletMarginLoss``. okc registers a loss of that name, so the
config runs unchanged: with ``mining: none`` (the default) it *is* torch's loss. The other modes
mine harder triplets among the batch's images with pytorch-metric-learning's miners, the field's
maintained implementations (``pip install 'okc[metric-learning]'``):

- ``batch_hard``: per anchor, its positive and the closest negative in the batch (Hermans et al.,
  "In defense of the triplet loss"); ``BatchHardMiner``;
- ``semihard``: every (anchor, negative) farther than the positive but within the margin
  (FaceNet); ``TripletMarginMiner(type_of_triplets='semihard')``;
- ``hard``: every (anchor, negative) closer than the positive; ``TripletMarginMiner('hard')``.

A triplet dataset has no class labels, so mining treats every other image of the batch (the other
triplets' positives and every negative) as a negative of an anchor: this holds when a batch's
triplets come from different classes, as with SOP's 11,318 product classes. The loss is the mean
(or sum) over the mined triplets, 0 when none is mined.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from okc.errors import ParamError
from okc.registry import LOSSES

Mining = Literal["none", "batch_hard", "semihard", "hard"]
Reduction = Literal["mean", "sum", "none"]


@LOSSES.register
class TripletMarginLoss(nn.Module):
    """``max(d(a, p) - d(a, n) + margin, 0)`` with the p-norm distance d (torch's parameters).

    Args:
        margin, p, eps, swap, reduction: as in ``torch.nn.TripletMarginLoss``.
        mining: ``none`` uses the given triplets; ``batch_hard``, ``semihard`` or ``hard`` mine
            the batch (see the module docstring). Mining supports neither ``swap`` (its distance
            to the positive is undefined for mined negatives) nor ``reduction: none`` (the number
            of mined triplets varies).
    """

    def __init__(
        self,
        *,
        margin: float = 1.0,
        p: float = 2.0,
        eps: float = 1e-6,
        swap: bool = False,
        reduction: Reduction = "mean",
        mining: Mining = "none",
    ) -> None:
        super().__init__()
        if margin < 0:
            raise ParamError("margin", f"must be non-negative, got {margin}")
        self.margin, self.p, self.eps, self.swap = margin, p, eps, swap
        self.reduction: Reduction = reduction
        self.mining: Mining = mining
        self.miner: nn.Module | None = None
        self.mined_loss: nn.Module | None = None
        if mining != "none":
            if swap:
                raise ParamError("swap", f"is not available with mining: {mining}")
            if reduction == "none":
                raise ParamError("reduction", f"none is not available with mining: {mining}")
            self.miner, self.mined_loss = _pml_parts(
                mining, margin=margin, p=p, reduction=reduction
            )

    def forward(
        self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
    ) -> torch.Tensor:
        if self.miner is None or self.mined_loss is None:
            return F.triplet_margin_loss(
                anchor, positive, negative, margin=self.margin, p=self.p, eps=self.eps,
                swap=self.swap, reduction=self.reduction,
            )  # fmt: skip
        num = anchor.shape[0]
        labels = torch.arange(num, device=anchor.device)
        # each anchor's positive shares its label; every negative gets a label of its own
        ref = torch.cat([positive, negative])
        ref_labels = torch.cat([labels, labels + num])
        triplets = self.miner(anchor, labels, ref, ref_labels)
        return self.mined_loss(anchor, labels, triplets, ref, ref_labels)


def _pml_parts(mining: Mining, *, margin: float, p: float, reduction: Reduction) -> tuple[Any, Any]:
    if importlib.util.find_spec("pytorch_metric_learning") is None:
        raise ParamError(
            "mining",
            f"{mining} needs pytorch-metric-learning: pip install 'okc[metric-learning]' "
            "(or use mining: none)",
        )
    from pytorch_metric_learning import distances, losses, miners, reducers

    distance = distances.LpDistance(p=p, power=1, normalize_embeddings=False)
    if mining == "batch_hard":
        miner = miners.BatchHardMiner(distance=distance)
    else:
        miner = miners.TripletMarginMiner(margin=margin, type_of_triplets=mining, distance=distance)
    reducer = reducers.SumReducer() if reduction == "sum" else reducers.MeanReducer()
    loss = losses.TripletMarginLoss(margin=margin, distance=distance, reducer=reducer)
    return miner, loss
