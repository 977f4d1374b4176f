"""Cases of the multi-head and self-supervised components (see README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch
from datafiles import write_image

from contracts.runners import Case, make

_BODY = {"backbone_name": "test_resnet", "pooling_name": "Pooling"}
_HEADS = [
    {"type": "ClassificationHead", "name": "a", "target": "x", "params": {"num_classes": 3}},
    {"type": "LinearHead", "name": "b", "target": "y", "params": {"out_channels": 4}},
]


def _check_multihead(name: str, case: Case, **_: Any) -> None:
    task = make("tasks", name, attrs.evolve(case, params={**_BODY, "heads": _HEADS})).eval()
    keep = torch.tensor([True, False, True])
    batch = {"image": torch.rand(3, 3, 16, 16), "target_x": torch.tensor([0, 1, 2]),
             "target_y": torch.rand(3, 4), "condition_x": keep}  # fmt: skip
    out = task.forward_with_gt(batch)
    assert set(out) == set(task.output_keys)
    assert out["prediction_a"].shape == (2, 3) and out["target_x"].tolist() == [0, 2]
    assert out["prediction_b"].shape == (3, 4)
    assert [o.shape for o in task(batch["image"])] == [(3, 3), (3, 4)]


def _check_simclr(name: str, case: Case, **_: Any) -> None:
    params = {**_BODY, "head_name": "LinearHead", "head_params": {"out_channels": 4}}
    task = make("tasks", name, attrs.evolve(case, params=params)).eval()
    views = {"image_0": torch.rand(2, 3, 16, 16), "image_1": torch.rand(2, 3, 16, 16)}
    out = task.forward_with_gt(views)
    assert out["emb1"].shape == out["emb2"].shape == (2, 4)
    out = task.forward_with_gt({"image": views["image_0"], "target": torch.tensor([0, 1])})
    assert out["embeddings"].shape[0] == 2 and out["target"].tolist() == [0, 1]


TASKS = {
    ("tasks", "MultiHeadClassificationTask"): Case(check=_check_multihead),
    ("tasks", "SimCLRTask"): Case(check=_check_simclr),
}


def _images(folder: Path) -> None:
    for i in range(2):
        write_image(folder / f"{i}.png", (40 * i, 10, 10))


def _check_multihead_csv(name: str, case: Case, *, tmp_path: Path, **_: Any) -> None:
    _images(tmp_path)
    (tmp_path / "a.csv").write_text("image_path,x,y\n0.png,1,0 2\n1.png,,1\n")
    targets = [{"name": "x", "column": "x", "type": "multiclass", "num_classes": 2},
               {"name": "y", "column": "y", "type": "multilabel", "num_classes": 3}]  # fmt: skip
    params = {"data_folder": str(tmp_path), "annotation_path": "a.csv", "targets": targets}
    dataset = make("datasets", name, attrs.evolve(case, params=params))
    sample = dataset[1]
    assert sample["image"].dtype == torch.uint8 and sample["image"].dim() == 3
    assert not sample["condition_x"] and sample["target_y"].tolist() == [0.0, 1.0, 0.0]


def _check_multihead_shapes(name: str, case: Case, **_: Any) -> None:
    sample = make("datasets", name, attrs.evolve(case, params={"num_samples": 2}))[0]
    assert sample["image"].dtype == torch.uint8
    assert {"target_shape", "target_colour", "condition_colour"} <= set(sample)


def _check_views(name: str, case: Case, *, tmp_path: Path, **_: Any) -> None:
    _images(tmp_path)
    (tmp_path / "a.csv").write_text("image_path\n0.png\n1.png\n")
    params = {"data_folder": str(tmp_path), "annotation_path": "a.csv"}
    if name == "ContrastiveShapes":
        params = {"num_samples": 2, "image_size": 16}
    dataset = make("datasets", name, attrs.evolve(case, params=params))
    sample = dataset[1]
    assert dataset.image_keys == ("image_0", "image_1") and sample["index"] == 1
    assert sample["image_0"].dtype == torch.uint8 and torch.equal(
        sample["image_0"], sample["image_1"]
    )


DATA = {
    ("datasets", "MultiHeadImageDataset"): Case(check=_check_multihead_csv),
    ("datasets", "MultiHeadShapes"): Case(check=_check_multihead_shapes),
    ("datasets", "UnsupervisedContrastiveDataset"): Case(check=_check_views),
    ("datasets", "ContrastiveShapes"): Case(check=_check_views),
}


def _embeddings() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    return {"embeddings": torch.randn(12, 8, generator=g), "target": torch.arange(12) % 3}


CASES: dict[tuple[str, str], Case] = {
    **TASKS,
    **DATA,
    ("metrics", "KNNAccuracy"): Case(params={"k": 3}, inputs=_embeddings),
}
