"""PairwiseLearnTask: metric learning on pairs drawn from a labelled batch.

Every pair of the batch is a training pair: the task gives the embeddings and the relevance matrix
``R`` (1 where two samples share a class), and a pairwise loss (``ContrastiveLoss``) pulls
relevant pairs together and pushes the others apart. TorchOk's own class passed its constructor
arguments in the wrong order (backbone, pooling, head, neck) and could not be built; this is the
task it meant.

Output keys of ``forward_with_gt``:

- ``emb1``, ``emb2``: (B, D) the embeddings (the model's output: backbone → pooling → head, e.g. a
  normalized ``LinearHead``); the same tensor twice, the arguments a pairwise loss takes;
- ``R``: (B, B) float relevance, when the batch has ``target``: class ids (B,) or multi-hot
  (B, num_classes), relevant when two samples share a class;
- ``target``: the batch's ``target``;
- ``query_idxs``, ``scores``, ``group_labels``: passed through from a retrieval dataset (for the
  ``representation`` retrieval meters) when the batch has them.

``okc predict`` writes ``embeddings`` (B, D) per sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import Tensor

from okc.errors import ConfigError
from okc.models.model import TASK_PARAMS
from okc.registry import TASKS
from okc.tasks.base import Batch
from okc.tasks.classification import ClassificationTask, ModelTaskParams

# Batch keys of retrieval datasets that the retrieval meters read (dataset_type: representation).
RETRIEVAL_KEYS = ("query_idxs", "scores", "group_labels")


def retrieval_outputs(batch: Batch) -> dict[str, Tensor]:
    """The retrieval keys the batch has, unchanged."""
    return {key: batch[key] for key in RETRIEVAL_KEYS if key in batch}


@TASKS.register
class PairwiseLearnTask(ClassificationTask):
    """Embeddings and their pairwise relevance, for pairwise metric-learning losses.

    Args:
        num_classes: the number of classes: class ids must be below it (checked on the first
            batch), multi-hot targets must have this many columns. Optional in okc, which
            compares class ids directly where TorchOk one-hot encoded them.
        backbone_name ... inputs: the model, as for ``ClassificationTask``.
    """

    output_keys = ("emb1", "emb2", "R", "target", *RETRIEVAL_KEYS)

    @attrs.frozen(kw_only=True)
    class Params(ModelTaskParams):
        num_classes: int | None = None

        def problems(self) -> list[ConfigError]:
            errors = super().problems()
            if self.num_classes is not None and self.num_classes < 1:
                errors.append(
                    ConfigError("num_classes", f"must be at least 1, got {self.num_classes}")
                )
            return errors

    def __init__(self, params: Any = None, /, **keys: Any) -> None:
        super().__init__(params, **keys)
        self.num_classes = self.params.num_classes
        self._ids_checked = False

    def forward_with_gt(self, batch: Batch) -> dict[str, Tensor]:
        embeddings = self.model(batch[self.input_key])
        out = {"emb1": embeddings, "emb2": embeddings}
        target = batch.get("target")
        if target is not None:
            out["R"] = self.relevance(target)
            out["target"] = target
        return {**out, **retrieval_outputs(batch)}

    def relevance(self, target: Tensor) -> Tensor:
        """(B, B) float: 1 where two samples share a class (class ids or multi-hot rows)."""
        if target.ndim == 1:
            self._check_class_ids(target)
            return (target[:, None] == target[None, :]).float()
        if self.num_classes is not None and target.shape[1] != self.num_classes:
            raise ConfigError(
                f"{TASK_PARAMS}.num_classes",
                f"is {self.num_classes}, but the multi-hot targets have {target.shape[1]} columns",
            )
        hot = target.float()
        return (hot @ hot.T > 0).float()

    def _check_class_ids(self, target: Tensor) -> None:
        """Class ids must be below ``num_classes``: checked on the first eager batch only.

        Comparing ids gives TorchOk's one-hot relevance without the (B, num_classes) matrix, so an
        id past ``num_classes`` would not fail by itself; one check on the first batch catches a
        wrong ``num_classes`` without a host sync on every step (compiled steps skip it).
        """
        if self.num_classes is None or self._ids_checked or torch.compiler.is_compiling():
            return
        self._ids_checked = True
        largest = int(target.max()) if target.numel() else -1  # sync point: first batch only
        if largest >= self.num_classes or (target.numel() and int(target.min()) < 0):
            raise ConfigError(
                f"{TASK_PARAMS}.num_classes",
                f"is {self.num_classes}, but the targets hold class ids from "
                f"{int(target.min())} to {largest}; ids must be in 0..{self.num_classes - 1}",
            )

    def predict_outputs(self, outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"embeddings": outputs["emb1"]}
