"""Detection losses under TorchOk's mmdet names, and mAP checked against pycocotools itself."""

from __future__ import annotations

import contextlib
import io
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from okc.config.bind import make
from okc.errors import OkcError
from okc.losses.detection import (
    MMCrossEntropyLoss,
    MMFocalLoss,
    MMGIoULoss,
    MMIoULoss,
    MML1Loss,
)
from okc.metrics.detection import CocoEvalMAP, MMDetectionMAP
from okc.registry import LOSSES, METRICS

# --- losses ---------------------------------------------------------------------------------------


def test_focal_loss_is_torchvisions_with_mmdets_reduction() -> None:
    torch.manual_seed(0)
    pred = torch.randn(6, 3)
    target = torch.tensor([0, 2, 3, 3, 1, -1])  # 3: background; -1: ignored
    loss = MMFocalLoss(gamma=2.0, alpha=0.25)(pred, target, avg_factor=torch.tensor(3.0))
    onehot = F.one_hot(target.clamp(min=0), 4)[:, :3].float()
    expected = sigmoid_focal_loss(pred, onehot, alpha=0.25, gamma=2.0, reduction="none")
    expected = expected[:5].sum() / 3.0  # the ignored row adds nothing
    torch.testing.assert_close(loss, expected)
    # probabilities in, same value (activated: true)
    probs = MMFocalLoss(activated=True)(pred.sigmoid(), target, avg_factor=3.0)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)
    # weights multiply per row; loss_weight scales
    weight = torch.tensor([1.0, 0, 0, 0, 0, 0])
    weighted = MMFocalLoss(loss_weight=2.0)(pred, target, weight=weight, avg_factor=1.0)
    torch.testing.assert_close(weighted, 2 * expected * 0 + 2 * sigmoid_focal_loss(
        pred[:1], onehot[:1], reduction="sum"))  # fmt: skip


def test_iou_loss_modes_by_hand() -> None:
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    target = torch.tensor([[0.0, 0.0, 10.0, 5.0]])  # IoU 0.5
    assert MMIoULoss()(pred, target).item() == pytest.approx(-math.log(0.5))
    assert MMIoULoss(mode="linear")(pred, target).item() == pytest.approx(0.5)
    assert MMIoULoss(linear=True)(pred, target).item() == pytest.approx(0.5)
    assert MMIoULoss(mode="square")(pred, target).item() == pytest.approx(0.75)
    two = torch.cat([pred, pred]), torch.cat([target, pred])
    weighted = MMIoULoss(mode="linear")(*two, weight=torch.tensor([2.0, 1.0]), avg_factor=4.0)
    assert weighted.item() == pytest.approx((2 * 0.5 + 0) / 4)


def test_giou_and_l1_losses() -> None:
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 8.0, 9.0]])
    target = torch.tensor([[20.0, 0.0, 30.0, 10.0], [5.0, 5.0, 8.0, 8.0]])
    expected = generalized_box_iou_loss(pred, target, reduction="mean")
    torch.testing.assert_close(MMGIoULoss()(pred, target), expected)
    assert MML1Loss()(pred, target).item() == pytest.approx((20 + 20 + 1) / 8)
    assert MML1Loss(reduction="sum")(pred, target).item() == pytest.approx(41.0)


def test_cross_entropy_sigmoid_and_softmax() -> None:
    score = torch.tensor([0.3, -1.2, 2.0])
    soft = torch.tensor([0.5, 0.1, 0.9])  # FCOS centerness targets
    expected = F.binary_cross_entropy_with_logits(score, soft, reduction="sum") / 2.0
    loss = MMCrossEntropyLoss(use_sigmoid=True)(score, soft, avg_factor=2.0)
    torch.testing.assert_close(loss, expected)
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, 1.0, 1.0]])
    label = torch.tensor([0, -100, 2])
    plain = MMCrossEntropyLoss()(logits, label)
    torch.testing.assert_close(plain, F.cross_entropy(logits, label, reduction="none").mean())
    non_ignored = MMCrossEntropyLoss(avg_non_ignore=True)(logits, label)
    torch.testing.assert_close(non_ignored, F.cross_entropy(logits, label))  # mean over 2
    assert MMCrossEntropyLoss(class_weight=2.0)(logits, label).item() == pytest.approx(
        2 * plain.item()
    )


@pytest.mark.parametrize(
    "loss", [MMFocalLoss(), MMIoULoss(), MMGIoULoss(), MML1Loss(),
             MMCrossEntropyLoss(use_sigmoid=True)],
    ids=lambda m: type(m).__name__,
)  # fmt: skip
def test_losses_are_zero_and_differentiable_on_nothing(loss: torch.nn.Module) -> None:
    """No positives (images without boxes): mmdet's mean of nothing was NaN; okc gives 0."""
    pred = torch.zeros(0, 4, requires_grad=True)
    target = (
        torch.zeros(0, dtype=torch.long) if isinstance(loss, MMFocalLoss) else torch.zeros(0, 4)
    )
    if isinstance(loss, MMCrossEntropyLoss):
        pred, target = torch.zeros(0, requires_grad=True), torch.zeros(0)
    value = loss(pred, target)
    assert value.item() == 0.0
    value.backward()


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("MMFocalLoss", {"use_sigmoid": False}, "only the sigmoid focal loss"),
        ("MMCrossEntropyLoss", {"use_mask": True}, "not in okc"),
        ("MMIoULoss", {"mode": "cube"}, "params.mode: expected 'linear' | 'square' | 'log'"),
        ("MMFocalLoss", {"gama": 2.0}, "did you mean 'gamma'"),
    ],
)
def test_bad_loss_params_are_config_errors(name: str, params: dict, message: str) -> None:
    with pytest.raises(OkcError, match=message):
        make(LOSSES, name, params)


# --- mAP against pycocotools ------------------------------------------------------------------------

TARGETS = [
    {
        "boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 90.0, 100.0]]),
        "labels": torch.tensor([0, 1]),
    },
    {
        "boxes": torch.tensor([[0.0, 0.0, 20.0, 30.0], [30.0, 30.0, 70.0, 60.0]]),
        "labels": torch.tensor([0, 0]),
    },
    {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
]
PREDS = [
    {"boxes": torch.tensor([[12.0, 11.0, 50.0, 52.0], [61.0, 58.0, 88.0, 97.0],
                            [0.0, 0.0, 30.0, 30.0]]),
     "scores": torch.tensor([0.9, 0.75, 0.3]), "labels": torch.tensor([0, 1, 1])},
    {"boxes": torch.tensor([[1.0, 0.0, 21.0, 29.0], [40.0, 35.0, 80.0, 64.0]]),
     "scores": torch.tensor([0.8, 0.6]), "labels": torch.tensor([0, 0])},
    {"boxes": torch.tensor([[5.0, 5.0, 15.0, 15.0]]), "scores": torch.tensor([0.5]),
     "labels": torch.tensor([0])},
]  # fmt: skip


def _pycocotools(iou_thrs: list[float] | None = None) -> list[float]:
    """COCOeval's stats on the hand-made case, straight from pycocotools."""
    images = [{"id": i, "width": 100, "height": 100} for i in range(len(TARGETS))]
    anns, dets = [], []
    for i, (t, p) in enumerate(zip(TARGETS, PREDS, strict=True)):
        for box, label in zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": label,
                         "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
        for box, s, label in zip(p["boxes"].tolist(), p["scores"].tolist(),
                                 p["labels"].tolist(), strict=True):  # fmt: skip
            dets.append({"image_id": i, "category_id": label, "score": s,
                         "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})  # fmt: skip
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": 0}, {"id": 1}]}  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(dets), "bbox")
        if iou_thrs is not None:
            evaluator.params.iouThrs = torch.tensor(iou_thrs).numpy()
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats]


def test_coco_eval_map_equals_pycocotools() -> None:
    metric = CocoEvalMAP()
    metric.update(PREDS[:2], TARGETS[:2])
    metric.update(PREDS[2:], TARGETS[2:])
    result = metric.compute()
    stats = _pycocotools()
    for key, index in (("map", 0), ("map_50", 1), ("map_75", 2), ("mar_1", 6), ("mar_100", 8)):
        assert result[key].item() == pytest.approx(stats[index], abs=1e-6), key


def test_mmdetection_map_equals_pycocotools_and_a_hand_count() -> None:
    metric = MMDetectionMAP(num_classes=2, iou_thr=0.5)
    metric.update(PREDS, TARGETS)
    value = metric.compute().item()
    assert value == pytest.approx(_pycocotools([0.5])[0], abs=1e-6)
    # by hand: class 0 has 3 boxes; its detections by score: TP .9, TP .8, FP .6, FP .5 -> recall
    # reaches 2/3 at precision 1 (AP over 101 recall points: 67 of them at 1.0, the rest 0);
    # class 1: TP .75, FP .3 -> AP 1. mAP = (67/101 + 1) / 2
    assert value == pytest.approx((67 / 101 + 1) / 2, abs=1e-6)


def test_torchok_formats_are_read_without_changing_the_dicts() -> None:
    torchok_preds = [
        {"bboxes": torch.cat([p["boxes"], p["scores"][:, None]], 1), "labels": p["labels"]}
        for p in PREDS
    ]
    torchok_targets = [{"bboxes": t["boxes"], "labels": t["labels"]} for t in TARGETS]
    keys = [set(p) for p in torchok_preds]
    ours, theirs = MMDetectionMAP(num_classes=2), MMDetectionMAP(num_classes=2)
    ours.update(PREDS, TARGETS)
    theirs.update(torchok_preds, torchok_targets)
    assert ours.compute() == theirs.compute()
    assert [set(p) for p in torchok_preds] == keys  # TorchOk's CocoEvalMAP popped 'bboxes'


def test_metric_params_from_torchok_configs() -> None:
    with pytest.warns(FutureWarning, match="compute_on_step .* has no effect"):
        metric = CocoEvalMAP(compute_on_step=False, displayed_metrics=["map", "map_small"])
    metric.update(PREDS, TARGETS)
    assert set(metric.compute()) == {"map", "map_small"}
    with pytest.raises(OkcError, match="did you mean 'map_50'"):
        make(METRICS, "CocoEvalMAP", {"displayed_metrics": ["map50"]})
    with pytest.raises(OkcError, match="scale_ranges: per-size mAP is not supported"):
        make(METRICS, "MMDetectionMAP", {"num_classes": 2, "scale_ranges": [[0, 32]]})
    with pytest.warns(UserWarning, match="nproc has no effect"):
        MMDetectionMAP(num_classes=2, nproc=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MMDetectionMAP(num_classes=2)  # nothing to warn about
    metric = MMDetectionMAP(num_classes=1)
    with pytest.raises(OkcError, match=r"label 1 is outside 0..0"):
        metric.update(PREDS, TARGETS)
    assert "MeanAveragePrecision" in METRICS
