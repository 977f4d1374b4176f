"""Retrieval meters: TorchOk's hand-computed fixtures, a brute-force numpy reference, 1 vs 2 ranks."""

from __future__ import annotations

import itertools
import math
import socket
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from okc.config.schema import Metric, Phase
from okc.errors import ConfigErrors, OkcError, under
from okc.metrics import MetricsManager, check_metrics
from okc.metrics.retrieval import (
    HitAtKMeter,
    MeanAveragePrecisionAtKMeter,
    NDCGAtKMeter,
    PrecisionAtKMeter,
    RecallAtKMeter,
    ranked_relevance,
)

METERS = {
    "hit": HitAtKMeter,
    "precision": PrecisionAtKMeter,
    "recall": RecallAtKMeter,
    "average_precision": MeanAveragePrecisionAtKMeter,
    "ndcg": NDCGAtKMeter,
}

# --- TorchOk's fixtures (tests/base_tests/metrics/representation/data.py), answers worked by hand -

_Q = [[0.3281, 0.3934, 0.3079, 0.3238], [0.0344, 0.8396, 0.1414, 0.7388], [0.5870, 0.1184, 0.1509, 0.3035]]  # fmt: skip
_DB = [[0.0256, 0.2660, 0.5239, 0.0042], [0.0513, 0.0375, 0.0321, 0.8175], [0.8611, 0.8352, 0.3209, 0.8839], [0.8433, 0.3853, 0.3332, 0.5728], [0.6903, 0.2962, 0.7524, 0.0826], [0.1255, 0.0154, 0.8745, 0.2216]]  # fmt: skip
VECTORS = torch.tensor([_Q[0], _DB[4], _Q[1], _Q[2], _DB[0], _DB[2], _DB[3], _DB[5], _DB[1]])
TARGETS = torch.tensor([0, 0, 1, 2, 1, 2, 2, 2, 1])
QUERY_IDXS = torch.tensor([0, -1, 1, 2, -1, -1, -1, -1, -1])
SCORES = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 2, 0], [0, 0, 1], [0, 0, 2], [0, 0, 4], [0, 4, 0]])  # fmt: skip
SCORES_QUERY_IN_GALLERY = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 0, 3], [0, 1, 0], [0, 2, 0], [0, 0, 1], [0, 0, 2], [0, 0, 4], [0, 4, 0]])  # fmt: skip

TORCHOK_ANSWERS = {
    ("classification", "precision"): [4 / 9, 7 / 18, 10 / 27, 11 / 36, 13 / 45, 15 / 54],
    ("classification", "recall"): [13 / 54, 19 / 54, 5 / 9, 16 / 27, 37 / 54, 7 / 9],
    ("classification", "average_precision"): [
        13 / 54,
        1 / 3,
        67 / 162,
        137 / 324,
        727 / 1620,
        787 / 1620,
    ],
    ("representation", "precision"): [1 / 3, 1 / 3, 4 / 9, 1 / 3, 1 / 3, 1 / 3],
    ("representation", "recall"): [1 / 9, 2 / 9, 13 / 18, 13 / 18, 5 / 6, 1],
    ("representation", "average_precision"): [1 / 9, 2 / 9, 7 / 18, 7 / 18, 41 / 90, 46 / 90],
    ("representation", "ndcg"): [
        0.08333333,
        0.14328645,
        0.42421699,
        0.42421699,
        0.51373735,
        0.55886806,
    ],
    ("query_in_gallery", "precision"): [1 / 3, 1 / 2, 4 / 9, 5 / 12, 7 / 15, 4 / 9],
    ("query_in_gallery", "recall"): [1 / 12, 5 / 18, 11 / 18, 13 / 18, 11 / 12, 1],
}


@pytest.mark.parametrize(("data", "name"), list(TORCHOK_ANSWERS))
def test_torchoks_hand_computed_answers(data: str, name: str) -> None:
    for k, expected in enumerate(TORCHOK_ANSWERS[data, name], start=1):
        if data == "classification":  # TorchOk computed these with normalized vectors
            meter = METERS[name](dataset_type="classification", k=k, normalize_vectors=True)
            for i in range(len(VECTORS)):  # one sample per batch, as TorchOk's test fed them
                meter.update(VECTORS[i : i + 1], TARGETS[i : i + 1])
        else:
            scores = SCORES if data == "representation" else SCORES_QUERY_IN_GALLERY
            meter = METERS[name](
                dataset_type="representation", k=k, normalize_vectors=data != "representation"
            )
            for i in range(len(VECTORS)):
                meter.update(VECTORS[i : i + 1], None, QUERY_IDXS[i : i + 1], scores[i : i + 1])
        assert meter.compute().item() == pytest.approx(expected, abs=1e-6), k


# --- brute-force reference ------------------------------------------------------------------------


def reference(
    name: str,
    vectors: np.ndarray,
    labels: np.ndarray | None = None,
    query_idxs: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    *,
    k: int = 1,
    normalize: bool = False,
    distance: str = "IP",
    group_averaging: bool = False,
    k_as_target_len: bool = False,
) -> float:
    """Each query on its own, with Python loops: sort the gallery by (similarity desc, relevance
    asc) and apply the textbook definition; queries without a relevant item are left out."""
    v = vectors.astype(np.float64)
    if normalize:
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
    n = len(v)
    if scores is None:  # classification
        queries = [(q, q) for q in range(n)]
        gallery = list(range(n))

        def rel(q: int, col: int, g: int) -> float:
            return float(labels[q] == labels[g])
    else:
        queries = [(q, int(query_idxs[q])) for q in range(n) if query_idxs[q] >= 0]
        gallery = [g for g in range(n) if query_idxs[g] < 0 or (scores[g] > 0).any()]

        def rel(q: int, col: int, g: int) -> float:
            return max(float(scores[g, col]), 0.0)

    values: dict[int, list[float]] = {}
    for q, col in queries:
        items = [g for g in gallery if g != q]
        if distance == "IP":
            sim = {g: float(v[q] @ v[g]) for g in items}
        else:
            sim = {g: -float(((v[q] - v[g]) ** 2).sum()) for g in items}
        order = sorted(items, key=lambda g: (-sim[g], rel(q, col, g)))
        gains = [rel(q, col, g) for g in order]
        num_rel = sum(r > 0 for r in gains)
        if num_rel == 0:
            continue
        kq = num_rel if k_as_target_len else k
        top = (gains + [0.0] * kq)[:kq]
        hits = [float(r > 0) for r in top]
        if name == "hit":
            value = max(hits)
        elif name == "precision":
            value = sum(hits) / kq
        elif name == "recall":
            value = sum(hits) / num_rel
        elif name == "average_precision":
            value = sum(sum(hits[: i + 1]) / (i + 1) for i in range(kq) if hits[i]) / num_rel
        else:
            ideal = sorted(gains, reverse=True)[:kq]
            dcg = sum(r / math.log2(i + 2) for i, r in enumerate(top))
            value = dcg / sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
        group = int(labels[q]) if labels is not None and group_averaging else 0
        values.setdefault(group, []).append(value)
    return float(np.mean([np.mean(v) for v in values.values()]))


def meter_value(name: str, batches: int = 3, **params: Any) -> float:
    """Feed ``params['vectors']`` & co. in ``batches`` uneven batches, then compute."""
    data = {key: params.pop(key, None) for key in ("vectors", "labels", "query_idxs", "scores")}
    meter = METERS[name](raise_empty_query=False, **params)
    bounds = np.linspace(0, len(data["vectors"]), batches + 1).astype(int)
    bounds[1] = max(1, bounds[1] - 1)  # uneven
    for lo, hi in itertools.pairwise(bounds):
        part = {k: None if v is None else torch.as_tensor(v[lo:hi]) for k, v in data.items()}
        meter.update(part["vectors"], part["labels"], part["query_idxs"], part["scores"])
    return meter.compute().item()


def classification_data(seed: int, *, n: int = 48, dim: int = 8, ties: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, n)
    labels[-1] = 99  # a class with one sample: nothing to retrieve, left out
    if ties:  # few distinct integer vectors: many exactly equal similarities
        vectors = rng.integers(-1, 2, (n, dim)).astype(np.float32)
    else:
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return {"vectors": vectors, "labels": labels}


def representation_data(seed: int, *, n: int = 40, num_queries: int = 6, ties: bool = False):
    rng = np.random.default_rng(seed)
    data = classification_data(seed, n=n, ties=ties)
    query_idxs = np.full(n, -1)
    rows = rng.choice(n, num_queries, replace=False)
    query_idxs[rows] = np.arange(num_queries)
    scores = rng.integers(0, 4, (n, num_queries)) * (rng.random((n, num_queries)) < 0.3)
    scores[rows[0]] = 0  # a query relevant to nothing: not in the gallery
    scores[rows[1], 2] = 3  # a query that is also relevant to another one: in the gallery
    scores[:, 5] = 0  # a query with no relevant item: left out
    return {**data, "query_idxs": query_idxs, "scores": scores.astype(np.float32)}


@pytest.mark.parametrize("name", list(METERS))
@pytest.mark.parametrize("k", [1, 3, 10])
@pytest.mark.parametrize("ties", [False, True])
def test_classification_equals_brute_force(name: str, k: int, ties: bool) -> None:
    data = classification_data(k, ties=ties)
    for normalize, distance in ((False, "IP"), (True, "IP"), (False, "L2")):
        if ties and normalize:
            continue  # normalized integer vectors tie only up to float rounding
        expected = reference(name, **data, k=k, normalize=normalize, distance=distance)
        got = meter_value(
            name, dataset_type="classification", k=k, normalize_vectors=normalize,
            metric_distance=distance, **data,
        )  # fmt: skip
        assert got == pytest.approx(expected, abs=1e-6), (normalize, distance)


@pytest.mark.parametrize("name", list(METERS))
@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("ties", [False, True])
def test_representation_equals_brute_force(name: str, k: int, ties: bool) -> None:
    data = representation_data(k, ties=ties)
    expected = reference(name, **data, k=k)
    got = meter_value(name, dataset_type="representation", k=k, **data)
    assert got == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", list(METERS))
def test_group_averaging_and_k_as_target_len_equal_brute_force(name: str) -> None:
    data = classification_data(5)
    for options in ({"group_averaging": True}, {"k_as_target_len": True}):
        expected = reference(name, **data, k=2, **options)
        got = meter_value(name, dataset_type="classification", k=2, **options, **data)
        assert got == pytest.approx(expected, abs=1e-6), options


def test_search_batch_size_changes_memory_not_results() -> None:
    data = classification_data(3, n=64, ties=True)
    values = {
        meter_value("average_precision", dataset_type="classification", k=5,
                    search_batch_size=size, use_batching_search=batching, **data)
        for size in (1, 7, 64, 1000) for batching in (True, False)
    }  # fmt: skip
    assert len(values) == 1


def test_ties_are_broken_against_the_query() -> None:
    # Three equally similar items, one relevant: it ranks last among them.
    similarity = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1]])
    relevance = torch.tensor([[1.0, 0.0, 0.0, 2.0, 3.0]])
    assert ranked_relevance(similarity, relevance, 4).tolist() == [[0.0, 0.0, 1.0, 2.0]]
    assert ranked_relevance(similarity, relevance, 7).tolist() == [[0, 0, 1, 2, 3, 0, 0]]
    # A collapsed model (every embedding equal) retrieves nothing relevant at k=1.
    meter = HitAtKMeter(dataset_type="classification", k=1)
    meter.update(torch.ones(6, 4), torch.tensor([0, 0, 0, 1, 1, 2]), None, None)
    with pytest.raises(OkcError, match="class 2 has a single sample.*raise_empty_query: false"):
        meter.compute()
    meter = HitAtKMeter(dataset_type="classification", k=1, raise_empty_query=False)
    meter.update(torch.ones(6, 4), torch.tensor([0, 0, 0, 1, 1, 2]), None, None)
    assert meter.compute().item() == 0.0


def test_query_without_relevant_items() -> None:
    kwargs = {"dataset_type": "representation", "k": 1}
    scores = torch.tensor([[0.0], [0.0], [0.0]])
    meter = HitAtKMeter(**kwargs)
    meter.update(torch.eye(3), None, torch.tensor([0, -1, -1]), scores)
    with pytest.raises(OkcError, match="query 0 has no relevant item"):
        meter.compute()
    meter = HitAtKMeter(**kwargs, raise_empty_query=False)
    meter.update(torch.eye(3), None, torch.tensor([0, -1, -1]), scores)
    with pytest.warns(UserWarning, match="no query has a relevant item"):
        assert meter.compute().item() == 0.0


def test_bad_params_and_inputs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="exact_index: okc always searches exactly"):
        HitAtKMeter(dataset_type="classification", exact_index=False)
    bad = Metric(
        name="HitAtKMeter", mapping={}, params={"dataset_type": "pairs", "metric_distance": "cos"}
    )
    assert [str(e) for e in check_metrics([bad])] == [
        "0.params.dataset_type: expected 'classification' | 'representation', got 'pairs'",
        "0.params.metric_distance: expected 'IP' | 'L2', got 'cos'",
    ]
    with pytest.raises(OkcError, match="needs group_labels.*group_labels: target"):
        HitAtKMeter(dataset_type="classification").update(torch.ones(2, 3))
    with pytest.raises(OkcError, match="needs query_idxs and scores"):
        HitAtKMeter(dataset_type="representation").update(torch.ones(2, 3))
    with pytest.raises(OkcError, match="multi-hot targets are not supported"):
        HitAtKMeter(dataset_type="classification").update(torch.ones(2, 3), torch.ones(2, 4))
    meter = HitAtKMeter(dataset_type="classification")
    meter.update(torch.tensor([[0.0, math.nan]]), torch.tensor([0]))
    with pytest.raises(OkcError, match="NaN or inf"):
        meter.compute()


def test_config_names_params_and_mapping_through_the_manager() -> None:
    spec = Metric(
        name="HitAtKMeter",
        params={"k": 1, "dataset_type": "classification", "normalize_vectors": True,
                "search_batch_size": 256},
        mapping={"vectors": "emb1", "group_labels": "target"},
        phases=(Phase.VALID,),
    )  # fmt: skip
    assert check_metrics([spec]) == []
    manager = MetricsManager([spec])
    labels = torch.tensor([0, 0, 1, 1])
    emb = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.2, 0.8]])
    manager.update(Phase.VALID, {"emb1": emb, "target": labels})
    assert manager.on_epoch_end(Phase.VALID) == {"valid/HitAtKMeter": pytest.approx(1.0)}
    bad = Metric(name="HitAtKMeter", params={"dataset_type": "classification", "kk": 1},
                 mapping={"vectors": "emb1"})  # fmt: skip
    errors = under("metrics", check_metrics([bad]))
    assert [e.path for e in errors] == ["metrics.0.params.kk"]
    with pytest.raises(ConfigErrors, match="did you mean 'k'"):
        MetricsManager([bad])


# --- distributed ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _all_values(shards: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Every meter at k=3 over ``shards`` fed one after the other; names by meter and data."""
    values = {}
    for kind, data in zip(("classification", "representation"), shards, strict=True):
        for name, cls in METERS.items():
            meter = cls(dataset_type=kind, k=3, raise_empty_query=False, search_batch_size=5)
            for part in data:
                meter.update(*(None if part.get(key) is None else torch.as_tensor(part[key])
                               for key in ("vectors", "labels", "query_idxs", "scores")))  # fmt: skip
            values[f"{kind}/{name}"] = meter.compute().item()
    return values


def _shards(rank: int, world_size: int) -> list[list[dict[str, Any]]]:
    """The rank's share of two datasets, interleaved as okc's sampler shards evaluation data, in
    batches of 4; rank 1 gets fewer samples."""
    out = []
    for data in (
        classification_data(11, n=37, ties=True),
        representation_data(11, n=37, ties=True),
    ):
        rows = np.arange(len(data["vectors"]))[rank::world_size]
        mine = {k: None if v is None else v[rows] for k, v in data.items()}
        out.append([{k: None if v is None else v[i : i + 4] for k, v in mine.items()}
                    for i in range(0, len(rows), 4)])  # fmt: skip
    return out


def _rank_main(rank: int, port: int, queue: Any) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        queue.put((rank, _all_values(_shards(rank, 2))))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_gloo_ranks_equal_one_process() -> None:
    single = _all_values(_shards(0, 1))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = mp.start_processes(
        _rank_main, args=(_free_port(), queue), nprocs=2, join=False, start_method="spawn"
    )
    results = {}
    try:
        for _ in range(2):
            rank, got = queue.get(timeout=120)
            results[rank] = got
        while not procs.join(timeout=60):
            pass
    finally:
        for proc in procs.processes:
            if proc.is_alive():
                proc.terminate()
    assert results[0] == results[1]
    assert results[0] == pytest.approx(single, abs=1e-6)
    # the shards are not the whole data in the same order: the values are order-independent
    assert single["classification/hit"] == pytest.approx(
        reference("hit", **classification_data(11, n=37, ties=True), k=3), abs=1e-6
    )
