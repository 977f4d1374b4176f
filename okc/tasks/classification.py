"""Image classification, multiclass or multilabel, on the backbone → neck → pooling → head model.

Output keys of ``forward_with_gt``:

- ``embeddings``: (B, D) pooled features (the head's input)
- ``prediction``: (B, num_classes) logits (ArcFace: margin logits in training, cosine in eval)
- ``target``: the batch's ``target`` when it has one: (B,) class ids, or (B, C) multi-hot

``okc predict`` writes ``prediction`` (the class id, or the multi-hot decision at 0.5 when
``multilabel``) and ``probability`` (softmax, or sigmoid when ``multilabel``) per sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from torch import Tensor

from okc.models.model import ModelKeys, build_model
from okc.registry import TASKS
from okc.tasks.base import BaseTask, Batch, TaskParams


@attrs.frozen(kw_only=True, slots=False)
class ModelTaskParams(ModelKeys, TaskParams):
    """The model keys and ``inputs``: the params of every task on the composite model."""


@TASKS.register
class ClassificationTask(BaseTask):
    """One label per image (softmax) or several (``multilabel``: a sigmoid per class)."""

    output_keys = ("embeddings", "prediction", "target")

    @attrs.frozen(kw_only=True)
    class Params(ModelTaskParams):
        multilabel: bool = False

    def __init__(self, params: Any = None, /, **keys: Any) -> None:
        super().__init__(params, **keys)
        self.model = build_model(self.params)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def forward_with_gt(self, batch: Batch) -> dict[str, Tensor]:
        target = batch.get("target")
        embeddings = self.model.forward_features(batch[self.input_key])
        out = {"embeddings": embeddings, "prediction": self.model.forward_head(embeddings, target)}
        if target is not None:
            out["target"] = target
        return out

    def predict_outputs(self, outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        logits = outputs["prediction"].float()
        if self.params.multilabel:
            probability = logits.sigmoid()
            return {"prediction": (probability > 0.5).long(), "probability": probability}
        probability = logits.softmax(dim=-1)
        return {"prediction": probability.argmax(dim=-1), "probability": probability}
