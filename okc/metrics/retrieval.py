"""Retrieval metrics at k (TorchOk's index-based meters), by exact search on the device.

``HitAtKMeter``, ``PrecisionAtKMeter``, ``RecallAtKMeter``, ``MeanAveragePrecisionAtKMeter`` and
``NDCGAtKMeter`` keep every embedding of the epoch (torchmetrics list states, concatenated across
ranks by torchmetrics' own sync in ``compute``), then rank the gallery for each query with batched
matrix products on the metric's device: ``search_batch_size`` queries at a time, so the memory
beyond the stored embeddings is ``search_batch_size × gallery size`` scores. TorchOk built a FAISS
index on the CPU; exact search by matrix products gives the same ranking without the dependency,
runs on the GPU and gives every rank the same value.

Two kinds of data (``dataset_type``):

- ``classification``: every sample is a query; its relevant items are the *other* samples of the
  same ``group_labels`` class; the gallery is every sample but the query itself.
- ``representation`` (TorchOk's ``RetrievalDataset``): ``query_idxs`` ≥ 0 marks a row as query
  number ``q`` (−1: not a query); ``scores[:, q] > 0`` are the rows relevant to query ``q``, the
  value being the graded relevance (NDCG uses it). The gallery is every row except queries that are
  relevant to no query (the query/gallery split); a query that is also in the gallery never
  retrieves itself and never counts as its own relevant item.

Definitions (TorchOk's, which follow ranx), for a query with ``R`` relevant items:
Hit@k = 1 if a relevant item is in the top k; Precision@k = relevant in top k / k;
Recall@k = relevant in top k / R; AP@k = Σ over relevant ranks i ≤ k of Precision@i / R;
NDCG@k = Σ_{i≤k} rel_i / log2(i+1) over the same sum for the ideal order (linear gains). The value
is the mean over queries (with ``group_averaging``, the mean of per-group means).

Decisions where TorchOk was undefined or wrong:

- **Ties** are broken against the query: among gallery items with exactly the same similarity,
  the less relevant rank first. The result then depends on the similarities only, not on the
  order the samples arrived in (which differs between 1 and N ranks), and a collapsed model (all
  embeddings equal) scores 0 instead of whatever the data order gives it.
- **Queries without a relevant item** (a class with one sample, a query with no match) cannot be
  scored: with ``raise_empty_query`` (the default, as in TorchOk) they are an error naming the
  class or query; otherwise they are left out of the mean. If no query can be scored the value is
  0 (with a warning).
- ``normalize_vectors`` normalizes each embedding to unit length (TorchOk, since PR #191,
  normalized each feature column instead).
- ``k_as_target_len``: each query's k is its own number of relevant items (R-precision).
- ``exact_index: false`` (FAISS IVF search in TorchOk) is rejected: okc searches exactly.
- ``use_batching_search: false`` searches all queries at once (memory: queries × gallery).
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from okc.errors import OkcError, ParamError
from okc.registry import METRICS

DatasetType = Literal["classification", "representation"]
MetricDistance = Literal["IP", "L2"]

DEFAULT_SEARCH_BATCH_SIZE = 1024


class RetrievalAtK(Metric):
    """Base of the retrieval meters: stores embeddings, searches exactly, averages ``score``.

    Args:
        dataset_type: ``classification`` (every sample is a query; relevant = same class) or
            ``representation`` (queries and graded relevance from ``query_idxs`` and ``scores``).
        k: how many retrieved items count (default 1).
        search_batch_size: queries ranked per matrix product (default 1024); bounds memory.
        normalize_vectors: L2-normalize every embedding first (inner product becomes cosine).
        metric_distance: ``IP`` (larger inner product is closer) or ``L2`` (Euclidean).
        exact_index: must be true (okc searches exactly); kept for TorchOk configs.
        group_averaging: average per ``group_labels`` group, then over groups.
        k_as_target_len: use each query's number of relevant items as its k.
        use_batching_search: false ranks all queries in one product.
        raise_empty_query: a query without relevant items is an error (else it is left out).
    """

    full_state_update: ClassVar[bool] = False
    is_differentiable: ClassVar[bool] = False
    higher_is_better: ClassVar[bool] = True

    def __init__(
        self,
        *,
        dataset_type: DatasetType,
        k: int | None = None,
        search_batch_size: int | None = None,
        normalize_vectors: bool = False,
        metric_distance: MetricDistance = "IP",
        exact_index: bool = True,
        group_averaging: bool = False,
        k_as_target_len: bool = False,
        use_batching_search: bool = True,
        raise_empty_query: bool = True,
    ) -> None:
        super().__init__()
        if not exact_index:
            raise ParamError(
                "exact_index",
                "okc always searches exactly (batched matrix products on the device); approximate "
                "search is not implemented: remove exact_index or set it to true",
            )
        k = 1 if k is None else k
        if k < 1:
            raise ParamError("k", f"must be at least 1, got {k}")
        size = DEFAULT_SEARCH_BATCH_SIZE if search_batch_size is None else search_batch_size
        if size < 1:
            raise ParamError("search_batch_size", f"must be at least 1, got {size}")
        self.dataset_type = dataset_type
        self.k = k
        self.search_batch_size = size
        self.normalize_vectors = normalize_vectors
        self.metric_distance = metric_distance
        self.group_averaging = group_averaging
        self.k_as_target_len = k_as_target_len
        self.use_batching_search = use_batching_search
        self.raise_empty_query = raise_empty_query
        self.add_state("vectors", default=[], dist_reduce_fx="cat")
        self.add_state("group_labels", default=[], dist_reduce_fx="cat")
        if dataset_type == "representation":
            self.add_state("query_idxs", default=[], dist_reduce_fx="cat")
            self.add_state("scores", default=[], dist_reduce_fx="cat")

    # --- what subclasses define -------------------------------------------------------------------

    @staticmethod
    def score(ranked: Tensor, ks: Tensor, num_relevant: Tensor, ideal: Tensor) -> Tensor:
        """Per-query values from ``ranked`` (Q, K): the relevance at each rank, 0 past ``ks``.

        ``num_relevant`` (Q,) counts each query's relevant items; ``ideal`` (Q, K) holds its
        largest relevances in descending order (for NDCG).
        """
        raise NotImplementedError

    # --- torchmetrics API -------------------------------------------------------------------------

    def update(
        self,
        vectors: Tensor,
        group_labels: Tensor | None = None,
        query_idxs: Tensor | None = None,
        scores: Tensor | None = None,
    ) -> None:
        """Store a batch: ``vectors`` (B, D); ``group_labels`` (B,) class or group ids;
        ``query_idxs`` (B,) and ``scores`` (B, num_queries) for ``representation``."""
        name = type(self).__name__
        if vectors.ndim != 2:
            raise OkcError(f"{name}: vectors must be (batch, dim), got {tuple(vectors.shape)}")
        batch = vectors.shape[0]
        needs_labels = self.dataset_type == "classification" or self.group_averaging
        if group_labels is None and needs_labels:
            why = "classes" if self.dataset_type == "classification" else "group_averaging"
            raise OkcError(
                f"{name}(dataset_type: {self.dataset_type}) needs group_labels for its {why}: "
                "map it to the task's target, e.g. mapping: {vectors: embeddings, "
                "group_labels: target}"
            )
        if group_labels is None:
            group_labels = torch.zeros(batch, dtype=torch.long, device=vectors.device)
        if group_labels.shape != (batch,):
            raise OkcError(
                f"{name}: group_labels must hold one class id per vector, shape ({batch},), got "
                f"{tuple(group_labels.shape)} (multi-hot targets are not supported)"
            )
        self.vectors.append(vectors.detach())
        self.group_labels.append(group_labels.detach().long())
        if self.dataset_type == "representation":
            if query_idxs is None or scores is None:
                raise OkcError(
                    f"{name}(dataset_type: representation) needs query_idxs and scores (from a "
                    "retrieval dataset); map them to the task's outputs of the same names"
                )
            if query_idxs.shape != (batch,) or scores.ndim != 2 or scores.shape[0] != batch:
                raise OkcError(
                    f"{name}: query_idxs must be ({batch},) and scores ({batch}, queries), got "
                    f"{tuple(query_idxs.shape)} and {tuple(scores.shape)}"
                )
            self.query_idxs.append(query_idxs.detach().long())
            self.scores.append(scores.detach())

    def compute(self) -> Tensor:
        vectors = dim_zero_cat(self.vectors).float()
        if not torch.isfinite(vectors).all():  # sync point: once per epoch
            raise OkcError(f"{type(self).__name__}: the embeddings contain NaN or inf")
        if self.normalize_vectors:
            vectors = F.normalize(vectors, dim=1)
        labels = dim_zero_cat(self.group_labels)
        if self.dataset_type == "classification":
            search = _ClassificationSearch(labels)
        else:
            search = _RepresentationSearch(
                dim_zero_cat(self.query_idxs), dim_zero_cat(self.scores).float()
            )
        values, groups = [], []
        step = self.search_batch_size if self.use_batching_search else max(search.num_queries, 1)
        for start in range(0, search.num_queries, step):
            rows = torch.arange(start, min(start + step, search.num_queries), device=labels.device)
            value, kept = self._score_queries(vectors, search, rows)
            values.append(value)
            groups.append(labels[search.query_rows[rows]][kept])
        return self._average(values, groups, vectors.device)

    # --- the search -------------------------------------------------------------------------------

    def _score_queries(
        self, vectors: Tensor, search: _Search, rows: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Values of the queries ``rows`` that can be scored, and which of ``rows`` they are."""
        gallery = vectors[search.gallery_rows]
        queries = vectors[search.query_rows[rows]]
        similarity = queries @ gallery.T
        if self.metric_distance == "L2":  # -|q - g|² up to the per-query constant |q|²
            similarity = 2 * similarity - gallery.square().sum(1)
        relevance = search.relevance(rows)
        own = search.own_column(rows)
        if own is not None:  # a query in the gallery never retrieves itself
            has = own >= 0
            similarity[has, own[has]] = -math.inf
            relevance[has, own[has]] = 0
        num_relevant = (relevance > 0).sum(1)
        empty = num_relevant == 0
        if self.raise_empty_query and empty.any():  # sync point: once per search batch
            raise OkcError(search.empty_message(rows[empty][0].item()))
        ks = num_relevant if self.k_as_target_len else torch.full_like(num_relevant, self.k)
        width = int(ks.max()) if len(ks) else self.k
        ranked = ranked_relevance(similarity, relevance, width)
        ranked = ranked * (torch.arange(width, device=ranked.device) < ks[:, None])
        ideal = _top(relevance, width)
        value = self.score(ranked, ks, num_relevant, ideal)
        return value[~empty], ~empty

    def _average(self, values: list[Tensor], groups: list[Tensor], device: torch.device) -> Tensor:
        value = torch.cat(values) if values else torch.zeros(0, device=device)
        if not len(value):
            warnings.warn(
                f"{type(self).__name__}: no query has a relevant item; the value is 0",
                stacklevel=3,
            )
            return torch.zeros((), device=device)
        value = value.double()
        if not self.group_averaging:
            return value.mean().float()
        group = torch.cat(groups)
        _, inverse = torch.unique(group, return_inverse=True)
        sums = torch.zeros(int(inverse.max()) + 1, dtype=value.dtype, device=device)
        counts = torch.zeros_like(sums)
        sums.index_add_(0, inverse, value)
        counts.index_add_(0, inverse, torch.ones_like(value))
        return (sums / counts).mean().float()


def ranked_relevance(similarity: Tensor, relevance: Tensor, k: int) -> Tensor:
    """(Q, k): the relevance of each query's top-k items in rank order, ties broken against it.

    Items with the same similarity rank least relevant first, so the result depends only on the
    similarities (not on the order of the gallery). Ranks past the gallery's size hold 0.
    """
    num, size = similarity.shape
    width = min(k, size)
    if width == 0:
        return relevance.new_zeros(num, k)
    top = similarity.topk(width, dim=1)
    kth = top.values[:, -1:]
    num_above = (similarity > kth).sum(1, keepdim=True)  # all of them are in `top`
    # order `top` by (similarity desc, relevance asc): sort by the minor key, then stably by the
    # major one
    rel = relevance.gather(1, top.indices)
    minor = rel.argsort(dim=1, stable=True)
    values, rel = top.values.gather(1, minor), rel.gather(1, minor)
    rel = rel.gather(1, values.argsort(dim=1, descending=True, stable=True))
    # the ranks after the strictly-better items go to the items tied at the k-th similarity,
    # least relevant first
    tied = torch.where(similarity == kth, relevance, math.inf)
    lowest = tied.topk(width, dim=1, largest=False).values
    rank = torch.arange(width, device=similarity.device)
    from_ties = lowest.gather(1, (rank - num_above).clamp(min=0))
    ranked = torch.where(rank < num_above, rel, from_ties)
    return F.pad(ranked, (0, k - width))


def _top(relevance: Tensor, k: int) -> Tensor:
    width = min(k, relevance.shape[1])
    return F.pad(relevance.topk(width, dim=1).values, (0, k - width))


class _Search:
    """Which rows are queries and gallery, and how relevant each gallery row is to a query."""

    query_rows: Tensor  # (Q,) rows of the stored vectors that are queries
    gallery_rows: Tensor  # (G,) rows searched

    @property
    def num_queries(self) -> int:
        return len(self.query_rows)

    def relevance(self, queries: Tensor) -> Tensor:
        """(len(queries), G) graded relevance (0: not relevant) of the gallery to ``queries``."""
        raise NotImplementedError

    def own_column(self, queries: Tensor) -> Tensor | None:
        """Each query's own column in the gallery (−1: not in it), or None if none is."""
        raise NotImplementedError

    def empty_message(self, query: int) -> str:
        raise NotImplementedError


class _ClassificationSearch(_Search):
    def __init__(self, labels: Tensor) -> None:
        self.labels = labels
        self.query_rows = self.gallery_rows = torch.arange(len(labels), device=labels.device)

    def relevance(self, queries: Tensor) -> Tensor:
        return (self.labels[queries, None] == self.labels[None, :]).float()

    def own_column(self, queries: Tensor) -> Tensor:
        return queries

    def empty_message(self, query: int) -> str:
        return (
            f"class {int(self.labels[query])} has a single sample, so it has no relevant item to "
            "retrieve; set raise_empty_query: false to leave such queries out"
        )


class _RepresentationSearch(_Search):
    def __init__(self, query_idxs: Tensor, scores: Tensor) -> None:
        device = scores.device
        rows = torch.arange(len(query_idxs), device=device)
        is_query = query_idxs >= 0
        self.query_rows = rows[is_query]
        self.columns = query_idxs[is_query]
        if len(self.columns) and int(self.columns.max()) >= scores.shape[1]:
            raise OkcError(
                f"query_idxs go up to {int(self.columns.max())} but scores have "
                f"{scores.shape[1]} query columns"
            )
        # a query relevant to no query is left out of the gallery (TorchOk's split)
        in_gallery = ~is_query | (scores > 0).any(1)
        self.gallery_rows = rows[in_gallery]
        position = torch.full_like(rows, -1)
        position[self.gallery_rows] = torch.arange(len(self.gallery_rows), device=device)
        self.position = position
        self.scores = scores[self.gallery_rows]

    def relevance(self, queries: Tensor) -> Tensor:
        return self.scores[:, self.columns[queries]].T.clamp(min=0)

    def own_column(self, queries: Tensor) -> Tensor:
        return self.position[self.query_rows[queries]]

    def empty_message(self, query: int) -> str:
        return (
            f"query {int(self.columns[query])} has no relevant item (no score > 0 in its column); "
            "set raise_empty_query: false to leave such queries out"
        )


# --- the metrics ------------------------------------------------------------------------------


def _hits(ranked: Tensor) -> Tensor:
    return (ranked > 0).to(torch.float64)


@METRICS.register
class HitAtKMeter(RetrievalAtK):
    """1 when a relevant item is among the top k, else 0 (ranx's hit rate)."""

    @staticmethod
    def score(ranked: Tensor, ks: Tensor, num_relevant: Tensor, ideal: Tensor) -> Tensor:
        return _hits(ranked).amax(1)


@METRICS.register
class PrecisionAtKMeter(RetrievalAtK):
    """Relevant items among the top k, divided by k."""

    @staticmethod
    def score(ranked: Tensor, ks: Tensor, num_relevant: Tensor, ideal: Tensor) -> Tensor:
        return _hits(ranked).sum(1) / ks.clamp(min=1)


@METRICS.register
class RecallAtKMeter(RetrievalAtK):
    """Relevant items among the top k, divided by the number of relevant items."""

    @staticmethod
    def score(ranked: Tensor, ks: Tensor, num_relevant: Tensor, ideal: Tensor) -> Tensor:
        return _hits(ranked).sum(1) / num_relevant.clamp(min=1)


@METRICS.register
class MeanAveragePrecisionAtKMeter(RetrievalAtK):
    """Σ of Precision@i over the relevant ranks i ≤ k, divided by the number of relevant items."""

    @staticmethod
    def score(ranked: Tensor, ks: Tensor, num_relevant: Tensor, ideal: Tensor) -> Tensor:
        hits = _hits(ranked)
        rank = torch.arange(1, hits.shape[1] + 1, device=hits.device, dtype=hits.dtype)
        precision = hits.cumsum(1) / rank
        return (precision * hits).sum(1) / num_relevant.clamp(min=1)


@METRICS.register
class NDCGAtKMeter(RetrievalAtK):
    """DCG@k over the ideal DCG@k, with linear gains: Σ rel_i / log2(i + 1)."""

    @staticmethod
    def score(ranked: Tensor, ks: Tensor, num_relevant: Tensor, ideal: Tensor) -> Tensor:
        width = ranked.shape[1]
        rank = torch.arange(width, device=ranked.device)
        discount = 1.0 / torch.log2(rank.to(torch.float64) + 2)
        dcg = (ranked.double() * discount).sum(1)
        ideal = ideal.double() * (rank < ks[:, None])
        best = (ideal * discount).sum(1)
        return dcg / best.clamp(min=torch.finfo(torch.float64).tiny)
