"""Cases of the metric-learning components (see README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch
from test_metric_learning_data import Labeled, write_retrieval, write_sop

from contracts.runners import Case, make

# --- losses and metrics ---------------------------------------------------------------------------


def _triplets() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    return {role: torch.randn(6, 8, generator=g).requires_grad_()
            for role in ("anchor", "positive", "negative")}  # fmt: skip


def _embeddings() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    return {"vectors": torch.randn(12, 8, generator=g), "group_labels": torch.arange(12) % 4}


_METER = Case(params={"dataset_type": "classification", "k": 3}, inputs=_embeddings)
LOSSES_AND_METRICS = {
    ("losses", "TripletMarginLoss"): Case(params={"mining": "batch_hard"}, inputs=_triplets),
    **{("metrics", name): _METER for name in (
        "HitAtKMeter", "PrecisionAtKMeter", "RecallAtKMeter", "MeanAveragePrecisionAtKMeter",
        "NDCGAtKMeter")},
    ("poolings", "PoolingLinear"): Case(params={"out_channels": 6}),
}  # fmt: skip

# --- datasets and the sampler ---------------------------------------------------------------------


def _check_sop(name: str, case: Case, *, tmp_path: Path, **_: Any) -> None:
    write_sop(tmp_path)
    dataset = make("datasets", name, attrs.evolve(case, params={"data_folder": str(tmp_path)}))
    sample = dataset[0]
    for key in dataset.image_keys:
        assert sample[key].dtype == torch.uint8 and sample[key].dim() == 3, key
    assert "index" in sample and ("target" in sample or name == "TRIPLET_SOP")


def _check_retrieval(name: str, case: Case, *, tmp_path: Path, **_: Any) -> None:
    write_retrieval(tmp_path)
    dataset = make("datasets", name, attrs.evolve(case, params={
        "data_folder": str(tmp_path), "matches_csv_path": "match.csv",
        "img_list_csv_path": "paths.csv"}))  # fmt: skip
    sample = dataset[0]
    assert sample["image"].dtype == torch.uint8 and sample["scores"].shape == (3,)


def _check_pk_sampler(name: str, case: Case, **_: Any) -> None:
    labels = Labeled([0, 0, 1, 1, 1, 2, 2, 3])
    sampler = make("samplers", name, attrs.evolve(case, params={"samples_per_class": 2}),
                   dataset=labels, batch_size=4)  # fmt: skip
    order = sampler.order(len(labels), torch.Generator().manual_seed(0))
    assert len(order) == sampler.num_indices(len(labels)) == 8
    for batch in order.view(-1, 4):  # 2 classes x 2 samples
        assert sorted(c for c in torch.bincount(labels.labels[batch]).tolist() if c) == [2, 2]


DATA = {
    ("datasets", "SOP"): Case(check=_check_sop),
    ("datasets", "TRIPLET_SOP"): Case(check=_check_sop),
    ("datasets", "RetrievalDataset"): Case(check=_check_retrieval),
    ("samplers", "PKSampler"): Case(check=_check_pk_sampler),
}

# --- tasks ----------------------------------------------------------------------------------------

_MODEL = {"backbone_name": "test_resnet", "pooling_name": "Pooling", "head_name": "LinearHead",
          "head_params": {"out_channels": 4, "normalize": True}}  # fmt: skip


def _check_pairwise(name: str, case: Case, **_: Any) -> None:
    task = make("tasks", name, attrs.evolve(case, params=_MODEL)).eval()
    out = task.forward_with_gt(
        {"image": torch.rand(3, 3, 16, 16), "target": torch.tensor([0, 1, 0])}
    )
    assert {"emb1", "emb2", "R", "target"} <= set(out) and out["R"].shape == (3, 3)


def _check_triplet(name: str, case: Case, **_: Any) -> None:
    task = make("tasks", name, attrs.evolve(case, params=_MODEL)).eval()
    images = {role: torch.rand(2, 3, 16, 16) for role in ("anchor", "positive", "negative")}
    assert set(task.forward_with_gt(images)) == set(images)
    out = task.forward_with_gt({"image": torch.rand(2, 3, 16, 16), "target": torch.tensor([0, 1])})
    assert out["embeddings"].shape == (2, 4)


TASKS = {
    ("tasks", "PairwiseLearnTask"): Case(check=_check_pairwise),
    ("tasks", "TripletLearnTask"): Case(check=_check_triplet),
}

CASES: dict[tuple[str, str], Case] = {**LOSSES_AND_METRICS, **DATA, **TASKS}
