"""KNNAccuracy: how well frozen embeddings separate classes, by k-nearest-neighbour voting.

Self-supervised training (``SimCLRTask``) never sees a label, so its loss says little about the
representation; the usual honest measure is a classifier on frozen embeddings. A k-NN vote needs
no training of its own and no second pass over TRAIN, and it measures the embedding space
directly, so it runs as an ordinary VALID metric: every embedding of the split is kept (list
states, concatenated across ranks by torchmetrics' sync), then each one is classified
leave-one-out by its ``k`` most cosine-similar *other* embeddings of the split. The labels are
used only for the vote; nothing is fitted to them, so the value cannot be gamed by the vote.

Votes are weighted by ``exp(similarity / temperature)`` (Wu et al. 2018, the k-NN monitor of the
MoCo and SimCLR reference code) or counted (``temperature: null``). Ties go to the lower class id.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from okc.errors import OkcError, ParamError
from okc.registry import METRICS


@METRICS.register
class KNNAccuracy(Metric):
    """Leave-one-out k-NN accuracy of the epoch's embeddings (see the module docstring).

    Args:
        k: neighbours that vote (at most the split's size minus one is used).
        temperature: votes weigh ``exp(cosine / temperature)``; null counts them equally.
        search_batch_size: queries per similarity product; bounds the memory to this many rows
            of the (N, N) similarity matrix.
    """

    full_state_update: ClassVar[bool] = False
    is_differentiable: ClassVar[bool] = False
    higher_is_better: ClassVar[bool] = True

    def __init__(
        self, *, k: int = 20, temperature: float | None = 0.1, search_batch_size: int = 1024
    ) -> None:
        super().__init__()
        if k < 1:
            raise ParamError("k", f"must be at least 1, got {k}")
        if temperature is not None and temperature <= 0:
            raise ParamError("temperature", f"must be positive (or null), got {temperature}")
        if search_batch_size < 1:
            raise ParamError("search_batch_size", f"must be at least 1, got {search_batch_size}")
        self.k = k
        self.temperature = temperature
        self.search_batch_size = search_batch_size
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, embeddings: Tensor, target: Tensor) -> None:
        """Store a batch: ``embeddings`` (B, D) and ``target`` (B,) class ids."""
        if embeddings.ndim != 2 or target.shape != embeddings.shape[:1]:
            raise OkcError(
                "KNNAccuracy: embeddings must be (batch, dim) and target (batch,) class ids, got "
                f"{tuple(embeddings.shape)} and {tuple(target.shape)}"
            )
        self.embeddings.append(F.normalize(embeddings.detach().float(), dim=1))
        self.target.append(target.detach().long())

    def compute(self) -> Tensor:
        vectors, labels = dim_zero_cat(self.embeddings), dim_zero_cat(self.target)
        k = min(self.k, len(labels) - 1)
        if k < 1:
            raise OkcError(f"KNNAccuracy needs at least 2 embeddings to vote, got {len(labels)}")
        num_classes = int(labels.max()) + 1  # sync point: once per epoch
        correct = torch.zeros((), device=vectors.device)
        for start in range(0, len(labels), self.search_batch_size):
            rows = torch.arange(start, min(start + self.search_batch_size, len(labels)))
            rows = rows.to(vectors.device)
            similarity = vectors[rows] @ vectors.T
            similarity[torch.arange(len(rows)), rows] = -torch.inf  # never its own neighbour
            top, index = similarity.topk(k, dim=1)
            weights = (
                torch.ones_like(top) if self.temperature is None else (top / self.temperature).exp()
            )
            votes = torch.zeros(len(rows), num_classes, device=vectors.device)
            votes.scatter_add_(1, labels[index], weights)
            correct += (votes.argmax(dim=1) == labels[rows]).sum()
        return correct / len(labels)
