"""Representation-learning losses TorchOk shipped: pairwise contrastive and SimCLR's NT-Xent.

Both match TorchOk's formulas. Fixes: ``ContrastiveLoss(reduction='none')`` returns the per-sample
vector (TorchOk raised), and NT-Xent masks self-similarities without in-place writes so it compiles.
Neither normalizes embeddings: as in TorchOk, that is the head's job (or the task's).

``ContrastiveLoss(mining='hard')`` mines in the batch from the relevance matrix ``R`` itself, not
with pytorch-metric-learning's miners: those need one class label per sample, while ``R`` may come
from multi-hot targets or any other relation, and TorchOk's formula (squared, summed per anchor)
is not pytorch-metric-learning's contrastive loss.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from okc.registry import LOSSES

Reduction = Literal["mean", "sum", "none"]
PairMining = Literal["all", "hard"]


def _reduce(values: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


@LOSSES.register
class ContrastiveLoss(nn.Module):
    """Pull relevant pairs together, push the others beyond ``margin``.

    With ``S = cdist(emb1, emb2)`` and relevance ``R`` (1: same class), the loss of sample i is
    ``Σ_j (1 - R_ij)·relu(margin - S_ij)² + R_ij·S_ij²`` (``mining: all``, TorchOk's loss), plus
    ``eps·‖emb1_i‖`` (L1 or L2) when ``reg`` is set. ``emb2`` may be the batch itself or a memory
    bank (cross-batch memory).

    ``mining: hard`` keeps, per sample, only its hardest pairs: the farthest relevant item and the
    closest irrelevant one, ``max_{R_ij>0} S_ij² + relu(margin - min_{R_ij=0} S_ij)²``. Easy pairs
    (most of them, once training has started) then stop diluting the gradient. A sample with no
    relevant or no irrelevant item in the batch gets no term for it: a class-balanced (P×K)
    sampler makes sure every sample has both.
    """

    def __init__(
        self,
        *,
        margin: float,
        reg: Literal["L1", "L2"] | None = None,
        reduction: Reduction = "mean",
        eps: float = 1e-3,
        mining: PairMining = "all",
    ) -> None:
        super().__init__()
        self.margin = margin
        self.reg = reg
        self.reduction: Reduction = reduction
        self.eps = eps
        self.mining: PairMining = mining

    def forward(self, emb1: torch.Tensor, emb2: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        dist = torch.cdist(emb1, emb2, p=2)
        relevant = R > 0
        if self.mining == "hard":
            farthest = torch.where(relevant, dist, 0.0).amax(1)
            closest = torch.where(relevant, math.inf, dist).amin(1)  # inf: no irrelevant item
            per_sample = farthest.pow(2) + F.relu(self.margin - closest).pow(2)
        else:
            R = R.to(dist.dtype)
            per_sample = ((1 - R) * F.relu(self.margin - dist).pow(2) + R * dist.pow(2)).sum(1)
        if self.reg == "L1":
            per_sample = per_sample + self.eps * emb1.abs().sum(1)
        elif self.reg == "L2":
            per_sample = per_sample + self.eps * emb1.norm(dim=1)
        return _reduce(per_sample, self.reduction)


@LOSSES.register
class NT_XentLoss(nn.Module):  # TorchOk's registered name
    """SimCLR's normalized-temperature cross-entropy over two views of a batch.

    Similarities are dot products of ``[emb1; emb2]`` with ``[emb1; emb2; emb_m]`` divided by the
    temperature; each sample's own similarity is masked out, and the positive of sample i of one
    view is sample i of the other. ``emb_m`` optionally adds extra negatives (a memory bank).
    """

    def __init__(self, *, reduction: Reduction = "mean", temperature: float = 1.0) -> None:
        super().__init__()
        self.reduction: Reduction = reduction
        self.temperature = temperature

    def forward(
        self, emb1: torch.Tensor, emb2: torch.Tensor, emb_m: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch = emb1.shape[0]
        rows = torch.cat([emb1, emb2])
        cols = rows if emb_m is None else torch.cat([rows, emb_m])
        sim = rows @ cols.T / self.temperature
        own = torch.eye(2 * batch, cols.shape[0], dtype=torch.bool, device=sim.device)
        sim = sim.masked_fill(own, max(-1e9, torch.finfo(sim.dtype).min))  # -1e9 overflows fp16
        half = torch.arange(batch, device=sim.device)
        positives = torch.cat([half + batch, half])
        return F.cross_entropy(sim, positives, reduction=self.reduction)
