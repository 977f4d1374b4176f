"""Detection mAP: torchmetrics' ``MeanAveragePrecision`` and TorchOk's two names for mAP.

All three compute COCO-style average precision with pycocotools, through torchmetrics. They take
``preds``: per image ``{boxes (N, 4) xyxy, scores (N,), labels (N,)}`` and ``target``: per image
``{boxes, labels}`` (what okc's detection task outputs as ``prediction`` and ``target``). TorchOk's
own format, ``{bboxes (N, 5) with the score last, labels}`` and ``{bboxes, labels}``, is read too,
without changing the caller's dicts (TorchOk's CocoEvalMAP popped keys from them, breaking any
metric listed after it).

- ``MeanAveragePrecision``: torchmetrics' class itself.
- ``MMDetectionMAP``: the mAP at one IoU threshold ``iou_thr`` over the classes that have boxes,
  as mmdet's ``eval_map`` reported it (TorchOk's ``MMDetMAP_50``). mmdet integrated the
  precision-recall curve exactly; pycocotools interpolates it at 101 recall points and keeps the
  100 best detections per image, so values can differ from mmdet's in the second decimal.
- ``CocoEvalMAP``: TorchOk's pycocotools mAP, returning the dict entries ``displayed_metrics``
  lists (``map``, ``map_50``, ..., ``mar_100``, ``map_per_class``, ...).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from okc.errors import OkcError, ParamError, did_you_mean
from okc.registry import METRICS

METRICS.register(MeanAveragePrecision)

#: what CocoEvalMAP can display (TorchOk's list)
COCO_KEYS = (
    "map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10",
    "mar_100", "mar_small", "mar_medium", "mar_large", "map_per_class", "mar_100_per_class",
)  # fmt: skip


def _as_prediction(item: Mapping[str, Tensor], index: int) -> dict[str, Tensor]:
    if "boxes" in item and "scores" in item:
        return {"boxes": item["boxes"], "scores": item["scores"], "labels": item["labels"]}
    boxes = item.get("bboxes")
    if boxes is not None and boxes.dim() == 2 and boxes.shape[-1] == 5:
        return {"boxes": boxes[:, :4], "scores": boxes[:, 4], "labels": item["labels"]}
    raise OkcError(
        f"prediction {index} has keys {sorted(item)}; expected boxes, scores and labels "
        "(or TorchOk's bboxes (N, 5) with the score last, and labels)"
    )


def _as_target(item: Mapping[str, Tensor], index: int) -> dict[str, Tensor]:
    boxes = item.get("boxes", item.get("bboxes"))
    labels = item.get("labels", item.get("label"))
    if boxes is None or labels is None:
        raise OkcError(f"target {index} has keys {sorted(item)}; expected boxes and labels")
    return {"boxes": boxes[:, :4], "labels": labels}


def _normalized(
    preds: Sequence[Mapping[str, Tensor]], target: Sequence[Mapping[str, Tensor]]
) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
    if len(preds) != len(target):
        raise OkcError(f"{len(preds)} predictions but {len(target)} targets in one batch")
    return (
        [_as_prediction(p, i) for i, p in enumerate(preds)],
        [_as_target(t, i) for i, t in enumerate(target)],
    )


def _warn_compute_on_step(value: bool | None) -> None:
    if value is not None:
        warnings.warn(
            "compute_on_step was removed from torchmetrics and has no effect: okc computes "
            "metrics at the end of each phase; remove it from the config",
            FutureWarning,
            stacklevel=3,
        )


@METRICS.register
class MMDetectionMAP(MeanAveragePrecision):
    """mAP at IoU ``iou_thr`` over ``num_classes`` classes (TorchOk's mmdet metric).

    Args:
        num_classes: labels must lie in 0..num_classes-1 (checked on every update).
        iou_thr: the IoU at which a detection matches a box.
        nproc: mmdet's worker processes; accepted for TorchOk configs, has no effect (warned).
        scale_ranges: mmdet's per-size mAP; not supported (an error when set).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        iou_thr: float = 0.5,
        nproc: int | None = None,
        scale_ranges: Sequence[Sequence[float]] | None = None,
    ) -> None:
        if num_classes < 1:
            raise ParamError("num_classes", f"must be at least 1, got {num_classes}")
        if not 0.0 < iou_thr <= 1.0:
            raise ParamError("iou_thr", f"must be in (0, 1], got {iou_thr}")
        if scale_ranges is not None:
            raise ParamError(
                "scale_ranges", "per-size mAP is not supported; use CocoEvalMAP's map_small etc."
            )
        if nproc is not None:
            warnings.warn(
                "MMDetectionMAP: nproc has no effect (okc evaluates in this process)",
                UserWarning,
                stacklevel=2,
            )
        super().__init__(iou_thresholds=[float(iou_thr)])
        self.num_classes = num_classes

    def update(  # type: ignore[override]
        self, preds: Sequence[Mapping[str, Tensor]], target: Sequence[Mapping[str, Tensor]]
    ) -> None:
        preds_, target_ = _normalized(preds, target)
        labels = [t["labels"] for t in (*preds_, *target_) if t["labels"].numel()]
        if labels:
            low = min(int(t.min()) for t in labels)  # sync point: validation only
            high = max(int(t.max()) for t in labels)
            if low < 0 or high >= self.num_classes:
                raise OkcError(
                    f"MMDetectionMAP: label {low if low < 0 else high} is outside "
                    f"0..{self.num_classes - 1} (params.num_classes is {self.num_classes})"
                )
        super().update(preds_, target_)

    def compute(self) -> Tensor:  # type: ignore[override]
        return super().compute()["map"]


@METRICS.register
class CocoEvalMAP(MeanAveragePrecision):
    """TorchOk's pycocotools mAP/mAR; ``compute`` returns the ``displayed_metrics`` entries.

    Args:
        class_metrics: also per-class mAP and mAR (``map_per_class``, ``mar_100_per_class``).
        compute_on_step: removed from torchmetrics; accepted with a warning, has no effect.
        dist_sync_on_step, process_group, dist_sync_fn: torchmetrics' distributed settings.
        displayed_metrics: which entries to return (default: all of ``COCO_KEYS``).
    """

    def __init__(
        self,
        *,
        class_metrics: bool = False,
        compute_on_step: bool | None = None,
        dist_sync_on_step: bool = False,
        process_group: Any | None = None,
        dist_sync_fn: Any | None = None,
        displayed_metrics: Sequence[str] | None = None,
    ) -> None:
        _warn_compute_on_step(compute_on_step)
        shown = list(COCO_KEYS if displayed_metrics is None else displayed_metrics)
        for key in shown:
            if key not in COCO_KEYS:
                raise ParamError(
                    "displayed_metrics",
                    f"unknown entry '{key}'{did_you_mean(key, COCO_KEYS)}; "
                    f"known: {', '.join(COCO_KEYS)}",
                )
        super().__init__(
            class_metrics=class_metrics, dist_sync_on_step=dist_sync_on_step,
            process_group=process_group, dist_sync_fn=dist_sync_fn,
        )  # fmt: skip
        self.displayed_metrics = shown

    def update(  # type: ignore[override]
        self, preds: Sequence[Mapping[str, Tensor]], target: Sequence[Mapping[str, Tensor]]
    ) -> None:
        super().update(*_normalized(preds, target))

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        result = super().compute()
        return {k: result[k] for k in self.displayed_metrics}


__all__ = ["COCO_KEYS", "CocoEvalMAP", "MMDetectionMAP", "MeanAveragePrecision"]
