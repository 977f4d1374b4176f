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

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from okc.errors import ConfigError, ParamError
from okc.registry import TASKS
from okc.tasks.base import Batch
from okc.tasks.classification import ClassificationTask

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

    def __init__(
        self,
        *,
        backbone_name: str,
        num_classes: int | None = None,
        backbone_params: Mapping[str, Any] | None = None,
        neck_name: str | None = None,
        neck_params: Mapping[str, Any] | None = None,
        pooling_name: str | None = None,
        pooling_params: Mapping[str, Any] | None = None,
        head_name: str | None = None,
        head_params: Mapping[str, Any] | None = None,
        inputs: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        if num_classes is not None and num_classes < 1:
            raise ParamError("num_classes", f"must be at least 1, got {num_classes}")
        super().__init__(
            backbone_name=backbone_name, backbone_params=backbone_params, neck_name=neck_name,
            neck_params=neck_params, pooling_name=pooling_name, pooling_params=pooling_params,
            head_name=head_name, head_params=head_params, inputs=inputs,
        )  # fmt: skip
        self.num_classes = num_classes
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
                "task.params.num_classes",
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
                "task.params.num_classes",
                f"is {self.num_classes}, but the targets hold class ids from "
                f"{int(target.min())} to {largest}; ids must be in 0..{self.num_classes - 1}",
            )

    def predict_outputs(self, outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"embeddings": outputs["emb1"]}
