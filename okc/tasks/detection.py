"""Single-stage object detection (FCOS, RetinaNet, DETR) on backbone → neck → head.

Parameters are TorchOk's: ``backbone_name``/``backbone_params``, ``num_scales`` (the last N
backbone stages feed the neck), ``neck_name``/``neck_params`` (from ``DETECTION_NECKS``, e.g.
``FPN``), ``head_name``/``head_params`` (from ``DETECTION_HEADS``: ``FCOSHead``,
``RetinaNetHead``, ``DETRHead``) and ``inputs``. Batches hold ``image`` (B, C, H, W) and, to train
or score, ``bboxes`` (per image an (N, 4) xyxy tensor in the image's pixels) and ``label`` (per
image (N,)).

Output keys of ``forward_with_gt``:

- ``prediction``: per image ``{boxes (K, 4), scores (K,), labels (K,)}`` after the head's
  ``test_cfg`` (thresholds, NMS; DETR: the best ``max_per_img`` queries), the format
  torchmetrics' MeanAveragePrecision takes;
- ``target``: per image ``{boxes, labels}`` (when the batch has boxes);
- the head's loss inputs (when the batch has boxes): FCOS ``flatten_cls_scores``,
  ``flatten_labels``, ``num_pos``, ``pos_decoded_bbox_preds``, ``pos_decoded_target_preds``,
  ``pos_centerness_targets``, ``centerness_denorm``, ``pos_centerness`` (TorchOk's names);
  RetinaNet the same classification keys plus ``pos_bbox_preds``/``pos_bbox_targets`` (deltas)
  and the decoded boxes; DETR ``cls_scores``, ``labels``, ``label_weights``, ``cls_avg_factor``,
  ``bboxes``, ``bboxes_gt``, ``bbox_weights``, ``num_total_pos``, ``bbox_preds``,
  ``bbox_targets`` (see each head's module).

``forward(x)`` (what export writes) is the dense output before NMS: (B, N, 4 + C [+ 1]) boxes and
scores of every prior (DETR: of every query, N = num_query). ``okc predict`` writes every
detection as a CSV row and per image as JSON.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from okc.models.detection import DetectionKeys, build_detection_model, loss_keys
from okc.registry import TASKS
from okc.tasks.base import BaseTask, Batch, TaskParams
from okc.tasks.predictions import PredictionWriter


@TASKS.register
class SingleStageDetectionTask(BaseTask):
    """Detection with a dense head; see the module docstring for batches and output keys."""

    @attrs.frozen(kw_only=True, slots=False)
    class Params(TaskParams, DetectionKeys):
        pass

    def __init__(self, params: Params | None = None, /, **keys: Any) -> None:
        super().__init__(params, **keys)
        self.model = build_detection_model(self.params)
        self.output_keys = ("prediction", "target", *loss_keys(self.params.head_name))

    @classmethod
    def declared_outputs(cls, params: Mapping[str, Any]) -> tuple[str, ...]:
        """``prediction``, ``target`` and the loss inputs of the configured head."""
        return ("prediction", "target", *loss_keys(params.get("head_name")))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def forward_with_gt(self, batch: Batch) -> dict[str, Any]:
        image = batch[self.input_key]
        size = tuple(image.shape[-2:])
        raw = self.model.raw(image)
        with torch.no_grad():  # detections feed metrics only: no graph to keep
            out: dict[str, Any] = {"prediction": self.model.detections(raw, size)}
        boxes, labels = batch.get("bboxes"), batch.get("label")
        if boxes is not None and labels is not None:
            out["target"] = [
                {"boxes": b, "labels": lab} for b, lab in zip(boxes, labels, strict=True)
            ]
            out.update(self.model.head.loss_inputs(raw, boxes, labels, size))
        return out

    def predict_outputs(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        return {"prediction": outputs["prediction"]}

    def prediction_writer(
        self, path: str | Path, *, rank: int = 0, world_size: int = 1
    ) -> DetectionWriter:
        return DetectionWriter(path, rank=rank, world_size=world_size)


CSV_COLUMNS = ("index", "x1", "y1", "x2", "y2", "score", "label")


class DetectionWriter(PredictionWriter):
    """``okc predict`` output for detection: a CSV with one row per detected box
    (``index,x1,y1,x2,y2,score,label``; boxes in the model input's pixels, after the
    transform's resizing and padding) and a JSON list with one entry per image,
    ``{"index", "boxes", "scores", "labels"}``, images without detections included.

    The file named ``path`` gets the format its suffix names (``.json``, else CSV); the other
    format is written beside it. Several PREDICT loaders write ``<stem>_<i>``; several processes
    ``<stem>_rank<r>``.
    """

    def add(self, loader: int, index: Tensor | None, columns: Mapping[str, Any]) -> None:
        detections = columns["prediction"]
        images = self.parts[loader]["images"]
        start = len(images)
        indices = index.tolist() if index is not None else range(start, start + len(detections))
        for i, det in zip(indices, detections, strict=True):
            images.append({
                "index": int(i),
                "boxes": det["boxes"].float().cpu().tolist(),
                "scores": det["scores"].float().cpu().tolist(),
                "labels": det["labels"].cpu().tolist(),
            })  # fmt: skip  # sync point (predict only)

    def write(self) -> Path:
        written = []
        for loader in sorted(self.parts) or [0]:
            images = self.parts[loader]["images"] if loader in self.parts else []
            json_path, csv_path = self.target(loader, ".json"), self.target(loader, ".csv")
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(images), encoding="utf-8")
            with csv_path.open("w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(CSV_COLUMNS)
                for image in images:
                    for box, score, label in zip(
                        image["boxes"], image["scores"], image["labels"], strict=True
                    ):
                        writer.writerow([image["index"], *(f"{v:.6g}" for v in box),
                                         f"{score:.6g}", label])  # fmt: skip
            written.append(json_path if self.path.suffix == ".json" else csv_path)
        return written[0]


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """The per-image detections a ``DetectionWriter`` wrote (its JSON, beside a CSV path)."""
    return json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))
