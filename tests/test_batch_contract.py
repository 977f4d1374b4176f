"""The batch contract every task builds on: several image keys, ragged keys, lists on the device,
list-valued predictions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from okc.config.schema import DataItem, DataLoader, Dataset, Phase
from okc.data import build_pipeline
from okc.data.collate import collate
from okc.data.datasets import Shapes
from okc.errors import OkcError
from okc.registry import DATASETS
from okc.tasks.predictions import PredictionWriter


class _PairShapes(Shapes):
    """Two images per sample (the second a copy of the first), a mask, and ragged boxes."""

    image_keys = ("image", "other")
    ragged_keys = ("bboxes",)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = super().__getitem__(index)
        sample["other"] = sample["image"].clone()
        sample["bboxes"] = torch.arange(4 * (index % 3), dtype=torch.float32).reshape(-1, 4)
        return sample


@pytest.fixture
def pair_dataset() -> Iterator[str]:
    name = "_PairShapesForTests"
    DATASETS.register(_PairShapes, name=name)
    yield name
    DATASETS._entries.pop(name)


def _item(name: str, **augment_params: Any) -> DataItem:
    params = {"num_samples": 6, "image_size": 16, "num_classes": 3, "with_mask": True}
    augment = [{"name": "HorizontalFlip", "params": {"p": 0.5}}]
    transform = [{"name": "Resize", "params": {"height": 12, "width": 12, "interpolation": 0}}]
    return DataItem(
        dataset=Dataset(name=name, params=params, transform=transform, augment=augment),
        dataloader=DataLoader(batch_size=6),
    )


def test_collate_keeps_ragged_keys_as_lists() -> None:
    samples = [{"b": torch.zeros(n, 4), "x": torch.ones(2)} for n in (0, 2, 2)]
    batch = collate(samples, ragged_keys=("b",))
    assert isinstance(batch["b"], list) and [t.shape[0] for t in batch["b"]] == [0, 2, 2]
    assert batch["x"].shape == (3, 2)
    with pytest.raises(OkcError, match="ragged_keys"):
        collate(samples)


def test_each_image_key_is_resized_and_augmented_on_its_own(pair_dataset: str) -> None:
    torch.manual_seed(0)
    pipe = build_pipeline(_item(pair_dataset), phase=Phase.TRAIN)
    cpu = next(iter(pipe))
    assert cpu["image"].shape == cpu["other"].shape == (6, 3, 12, 12)  # per-sample Resize on both
    assert [t.shape[0] for t in cpu["bboxes"]] == [0, 1, 2, 0, 1, 2]
    out = pipe.to_device(cpu)
    assert out["image"].dtype == out["other"].dtype == torch.float32
    assert isinstance(out["bboxes"], list) and len(out["bboxes"]) == 6
    # the two keys held the same pixels; independent flips make some samples differ
    same = [torch.equal(a, b) for a, b in zip(out["image"], out["other"], strict=True)]
    assert not all(same)
    # the mask follows the first image: background (0) wherever its image was flipped with it
    flipped = [torch.equal(a, cpu["image"][i].float().div(255).flip(-1))
               for i, a in enumerate(out["image"])]  # fmt: skip
    for i, was_flipped in enumerate(flipped):
        expected = cpu["mask"][i].flip(-1) if was_flipped else cpu["mask"][i]
        assert torch.equal(out["mask"][i], expected)


def test_prediction_writer_writes_list_outputs_as_jsonl(tmp_path) -> None:
    writer = PredictionWriter(tmp_path / "preds.csv")
    boxes = [{"boxes": torch.ones(n, 4), "scores": torch.full((n,), 0.5)} for n in (1, 0)]
    writer.add(0, torch.tensor([7, 8]), {"score": torch.tensor([0.1, 0.2]), "detections": boxes})
    path = writer.write()
    assert path.read_text().splitlines() == ["index,score", "7,0.1", "8,0.2"]
    rows = [json.loads(line) for line in path.with_suffix(".jsonl").read_text().splitlines()]
    assert rows[0] == {"index": 7, "detections": {"boxes": [[1.0] * 4], "scores": [0.5]}}
    assert rows[1]["detections"]["boxes"] == []
    saved = torch.load(path.with_suffix(".pt"), weights_only=True)
    assert len(saved["detections"]) == 2 and torch.equal(saved["index"], torch.tensor([7, 8]))
