"""Image classification, multiclass or multilabel, on the backbone → neck → pooling → head model.

Output keys of ``forward_with_gt``:

- ``embeddings``: (B, D) pooled features (the head's input)
- ``prediction``: (B, num_classes) logits (ArcFace: margin logits in training, cosine in eval)
- ``target``: the batch's ``target`` when it has one: (B,) class ids, or (B, C) multi-hot

``okc predict`` writes ``prediction`` (the class id, or the multi-hot decision at 0.5 when
``multilabel``) and ``probability`` (softmax, or sigmoid when ``multilabel``) per sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from okc.config.bind import check_params
from okc.errors import ConfigError
from okc.models import build_model, check_model_params
from okc.registry import TASKS
from okc.tasks.base import BaseTask, Batch

MODEL_KEYS = (
    "backbone_name", "backbone_params", "neck_name", "neck_params",
    "pooling_name", "pooling_params", "head_name", "head_params",
)  # fmt: skip


@TASKS.register
class ClassificationTask(BaseTask):
    output_keys = ("embeddings", "prediction", "target")

    def __init__(
        self,
        *,
        backbone_name: str,
        backbone_params: Mapping[str, Any] | None = None,
        neck_name: str | None = None,
        neck_params: Mapping[str, Any] | None = None,
        pooling_name: str | None = None,
        pooling_params: Mapping[str, Any] | None = None,
        head_name: str | None = None,
        head_params: Mapping[str, Any] | None = None,
        inputs: Sequence[Mapping[str, Any]] | None = None,
        multilabel: bool = False,
    ) -> None:
        super().__init__(inputs=inputs)
        self.multilabel = multilabel
        params = {k: v for k, v in locals().items() if k in MODEL_KEYS and v is not None}
        self.model = build_model(params, path="task.params")

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
        if self.multilabel:
            probability = logits.sigmoid()
            return {"prediction": (probability > 0.5).long(), "probability": probability}
        probability = logits.softmax(dim=-1)
        return {"prediction": probability.argmax(dim=-1), "probability": probability}

    @classmethod
    def check_params(cls, params: Mapping[str, Any], *, path: str) -> list[ConfigError]:
        errors = check_params(cls, params, path=path)
        model = {k: v for k, v in params.items() if k in MODEL_KEYS}
        if "backbone_name" in model:
            errors += check_model_params(model, path=path)
        return errors
