"""TripletLearnTask: metric learning on (anchor, positive, negative) image triplets.

Training batches come from a triplet dataset (``TRIPLET_SOP``: image keys ``anchor``,
``positive``, ``negative``); the three embeddings go to a triplet loss (``TripletMarginLoss``).
Evaluation batches are ordinary labelled images (``SOP``), embedded for the retrieval meters.

Output keys of ``forward_with_gt``:

- a batch with ``anchor``: ``anchor``, ``positive``, ``negative``, each (B, D) embeddings;
- a batch with ``image``: ``embeddings`` (B, D) and ``target`` (when present), plus ``query_idxs``,
  ``scores``, ``group_labels`` from a retrieval dataset.

The embeddings are the model's output (backbone → pooling → head, e.g. a normalized
``LinearHead``): what the triplet loss trains is what the meters measure. TorchOk's validation
measured the pooled features before the head instead.

The three images of a triplet batch go through the model as one batch of 3B: one forward pass,
and batch norm normalizes them together, as it does at inference.

``okc predict`` writes ``embeddings`` (B, D) per sample.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import torch
from torch import Tensor

from okc.registry import TASKS
from okc.tasks.base import Batch
from okc.tasks.classification import ClassificationTask, ModelTaskParams
from okc.tasks.pairwise import RETRIEVAL_KEYS, retrieval_outputs

ROLES = ("anchor", "positive", "negative")


@TASKS.register
class TripletLearnTask(ClassificationTask):
    """Embeddings of triplets (training) and of labelled images (evaluation)."""

    output_keys = (*ROLES, "embeddings", "target", *RETRIEVAL_KEYS)

    @attrs.frozen(kw_only=True)
    class Params(ModelTaskParams):
        """The model and ``inputs``, as for ``ClassificationTask`` (no ``multilabel``)."""

    def forward_with_gt(self, batch: Batch) -> dict[str, Tensor]:
        if ROLES[0] in batch:
            images = [batch[role] for role in ROLES]
            embeddings = self.model(torch.cat(images)).split(images[0].shape[0])
            return dict(zip(ROLES, embeddings, strict=True))
        out = {"embeddings": self.model(batch[self.input_key])}
        if "target" in batch:
            out["target"] = batch["target"]
        return {**out, **retrieval_outputs(batch)}

    def predict_outputs(self, outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"embeddings": outputs["embeddings"]}
