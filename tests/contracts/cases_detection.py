"""Cases of the components the detection family registers (see README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import torch
from datafiles import write_image

from contracts.runners import Case, make

# --- losses: mmdet's forward argument names ----------------------------------------------------


def _classes() -> dict[str, Any]:
    return {"pred": torch.randn(6, 3, requires_grad=True),
            "target": torch.tensor([0, 1, 2, 3, 3, -1]), "avg_factor": torch.tensor(3.0)}  # fmt: skip


def _boxes() -> dict[str, Any]:
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 9.0, 12.0]], requires_grad=True)
    return {"pred": pred, "target": torch.tensor([[1.0, 0.0, 11.0, 9.0], [4.0, 5.0, 9.0, 11.0]]),
            "weight": torch.tensor([0.5, 1.0]), "avg_factor": torch.tensor(1.5)}  # fmt: skip


LOSSES = {
    ("losses", "MMFocalLoss"): Case(inputs=_classes),
    ("losses", "MMIoULoss"): Case(inputs=_boxes),
    ("losses", "MMGIoULoss"): Case(inputs=_boxes),
    ("losses", "MML1Loss"): Case(inputs=_boxes),
    ("losses", "MMCrossEntropyLoss"): Case(
        params={"use_sigmoid": True},
        inputs=lambda: {
            "cls_score": torch.randn(4, requires_grad=True),
            "label": torch.rand(4),
            "avg_factor": 4.0,
        },
    ),
}

# --- metrics ------------------------------------------------------------------------------------


def _detections() -> dict[str, Any]:
    preds = [
        {
            "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 34.0]]),
            "scores": torch.tensor([0.9, 0.4]),
            "labels": torch.tensor([0, 1]),
        }
    ]
    target = [{"boxes": torch.tensor([[1.0, 0.0, 10.0, 11.0]]), "labels": torch.tensor([0])}]
    return {"preds": preds, "target": target}  # fmt: skip


def _check_torchmetrics_map(name: str, case: Case, **_: Any) -> None:
    """torchmetrics' class also returns the class ids seen (a vector): every entry is finite."""
    metric = make("metrics", name, case)
    metric.update(**_detections())
    result = metric.compute()
    assert 0.0 <= float(result["map_50"]) <= 1.0
    assert all(torch.isfinite(v.float()).all() for v in result.values())


METRICS = {
    ("metrics", "MMDetectionMAP"): Case(params={"num_classes": 2}, inputs=_detections),
    ("metrics", "CocoEvalMAP"): Case(inputs=_detections),
    ("metrics", "MeanAveragePrecision"): Case(check=_check_torchmetrics_map),
}

# --- model parts: a list of maps in, a list (neck) or per-level outputs (head) out -------------


def _check_detection_neck(name: str, case: Case, **_: Any) -> None:
    backbone = make("backbones", "test_resnet", Case()).eval()
    neck = make("detection_necks", name, case, in_channels=list(backbone.out_channels[-3:]),
                in_strides=list(backbone.out_strides[-3:])).eval()  # fmt: skip
    maps = neck(backbone(torch.rand(2, 3, 64, 64))[-3:])
    assert [m.shape[1] for m in maps] == [neck.out_channels] * len(neck.out_strides)
    assert [64 // m.shape[-1] for m in maps] == neck.out_strides


def _check_detection_head(name: str, case: Case, **_: Any) -> None:
    head = make("detection_heads", name, case, in_channels=8, in_strides=[8, 16]).eval()
    raw = head([torch.rand(2, 8, 4, 4), torch.rand(2, 8, 2, 2)])
    dense = head.decode(raw, (32, 32))
    assert dense.shape[:2] == (2, sum(head.level_sizes(raw))) and torch.isfinite(dense).all()
    detections = head.detections(dense, head.level_sizes(raw))
    assert len(detections) == 2 and set(detections[0]) == {"boxes", "scores", "labels"}
    boxes = [torch.tensor([[2.0, 2.0, 20.0, 24.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([1]), torch.zeros(0, dtype=torch.long)]
    inputs = head.loss_inputs(raw, boxes, labels, (32, 32))
    assert set(inputs) == set(head.loss_keys)


DETECTION_PARTS = {
    ("detection_necks", "FPN"): Case(
        params={"out_channels": 8, "num_outs": 4, "add_extra_convs": "on_output"},
        check=_check_detection_neck,
    ),
    ("detection_heads", "FCOSHead"): Case(
        params={
            "num_classes": 2,
            "feat_channels": 8,
            "stacked_convs": 1,
            "norm_cfg": {"type": "GN", "num_groups": 4},
        },
        check=_check_detection_head,
    ),
    ("detection_heads", "RetinaNetHead"): Case(
        params={"num_classes": 2, "feat_channels": 8, "stacked_convs": 1},
        check=_check_detection_head,
    ),
    ("detection_heads", "DETRHead"): Case(
        params={
            "num_classes": 2,
            "num_query": 4,
            "transformer": {
                "encoder": {
                    "num_layers": 1,
                    "transformerlayers": {
                        "attn_cfgs": [{"embed_dims": 8, "num_heads": 2}],
                        "feedforward_channels": 16,
                        "operation_order": ["self_attn", "norm", "ffn", "norm"],
                    },
                },
                "decoder": {
                    "num_layers": 2,
                    "return_intermediate": True,
                    "transformerlayers": {
                        "attn_cfgs": {"embed_dims": 8, "num_heads": 2},
                        "feedforward_channels": 16,
                        "operation_order": [
                            "self_attn",
                            "norm",
                            "cross_attn",
                            "norm",
                            "ffn",
                            "norm",
                        ],
                    },
                },
            },
            "positional_encoding": {"num_feats": 4, "normalize": True},
        },
        check=_check_detection_head,
    ),
}

# --- datasets -----------------------------------------------------------------------------------


def _check_boxes_sample(dataset: Any) -> None:
    sample = dataset[0]
    assert sample["image"].dtype == torch.uint8 and sample["image"].dim() == 3
    assert sample["bboxes"].shape == (sample["label"].shape[0], 4)
    assert dataset.ragged_keys == ("bboxes", "label")


def _check_detection_csv(name: str, case: Case, *, tmp_path: Path, **_: Any) -> None:
    write_image(tmp_path / "a.png", (10, 20, 30))
    (tmp_path / "ann.csv").write_text('image_path,bbox,label\na.png,"[[1, 2, 3, 4]]","[0]"\n')
    dataset = make("datasets", name, attrs.evolve(case, params={
        "data_folder": str(tmp_path), "annotation_path": "ann.csv"}))  # fmt: skip
    _check_boxes_sample(dataset)


def _check_coco(name: str, case: Case, *, tmp_path: Path, **_: Any) -> None:
    root = tmp_path / "COCO"
    write_image(root / "val2017" / "a.png", (10, 20, 30))
    data = {"images": [{"id": 1, "file_name": "a.png", "height": 6, "width": 5}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 4, "bbox": [1, 1, 2, 3]}],
            "categories": [{"id": 4, "name": "thing"}]}  # fmt: skip
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    dataset = make("datasets", name, attrs.evolve(case, params={
        "data_folder": str(tmp_path), "train": False}))  # fmt: skip
    _check_boxes_sample(dataset)


DATASETS = {
    ("datasets", "DetectionDataset"): Case(check=_check_detection_csv),
    ("datasets", "COCODetection"): Case(check=_check_coco),
}

# --- tasks ----------------------------------------------------------------------------------------


def _check_detection_task(name: str, case: Case, **_: Any) -> None:
    params = {"backbone_name": "test_resnet", "num_scales": 2, "neck_name": "FPN",
              "neck_params": {"out_channels": 8, "num_outs": 2}, "head_name": "RetinaNetHead",
              "head_params": {"num_classes": 2, "feat_channels": 8, "stacked_convs": 1}}  # fmt: skip
    task = make("tasks", name, attrs.evolve(case, params=params))
    batch = {"image": torch.rand(2, 3, 32, 32), "bboxes": [torch.tensor([[1.0, 2, 20, 30]])] * 2,
             "label": [torch.tensor([1])] * 2}  # fmt: skip
    out = task.forward_with_gt(batch)
    assert set(task.output_keys) == set(out) == set(task.declared_outputs(params))
    assert task(batch["image"]).shape[:1] == (2,)


TASKS = {("tasks", "SingleStageDetectionTask"): Case(check=_check_detection_task)}

CASES: dict[tuple[str, str], Case] = {
    **LOSSES, **METRICS, **DETECTION_PARTS, **DATASETS, **TASKS,
}  # fmt: skip
