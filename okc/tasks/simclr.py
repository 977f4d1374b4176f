"""SimCLRTask: self-supervised embeddings from two augmented views of each image (SimCLR).

Training batches hold two views of every image, ``image_0`` and ``image_1`` (TorchOk's keys, as
``UnsupervisedContrastiveDataset`` and okc's ``ContrastiveShapes`` give them). The views are drawn
by the experiment's ``augment`` on the device, on the whole batch: the pipeline augments each
image key with its own random draw, so the two views of an image differ. Both go through the model
(backbone → neck → pooling → projection head, e.g. a normalized ``LinearHead``) as one batch of 2B,
and ``NT_XentLoss`` pulls each image's two projections together against the other 2B - 2.

Evaluation batches are ordinary labelled images: the task gives the representation (the pooled
features before the projection head, which SimCLR found to transfer better) for ``KNNAccuracy``,
a leave-one-out k-NN vote on the frozen VALID embeddings. Their labels are never trained on. Set
``task.compute_loss_on_valid: false`` when VALID holds plain images (there are no views to
contrast).

Output keys of ``forward_with_gt``:

- a batch with ``image_0``: ``emb1``, ``emb2``, each (B, P) projections of the two views;
- a batch with ``image``: ``embeddings`` (B, D) the representation, ``projection`` (B, P), and
  ``target`` when the batch has one.

``forward(x)`` is TorchOk's: the projection. ``okc predict`` writes ``embeddings`` (B, D).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import torch
from torch import Tensor

from okc.registry import TASKS
from okc.tasks.base import Batch
from okc.tasks.classification import ClassificationTask, ModelTaskParams

VIEWS = ("image_0", "image_1")


@TASKS.register
class SimCLRTask(ClassificationTask):
    """Projections of two views (training), representations of labelled images (evaluation)."""

    output_keys = ("emb1", "emb2", "embeddings", "projection", "target")

    @attrs.frozen(kw_only=True)
    class Params(ModelTaskParams):
        """The model and ``inputs``, as for ``ClassificationTask`` (no ``multilabel``)."""

    def forward_with_gt(self, batch: Batch) -> dict[str, Tensor]:
        if VIEWS[0] in batch:
            views = [batch[key] for key in VIEWS]
            emb1, emb2 = self.model(torch.cat(views)).split(views[0].shape[0])
            return {"emb1": emb1, "emb2": emb2}
        features = self.model.forward_features(batch[self.input_key])
        out = {"embeddings": features, "projection": self.model.forward_head(features)}
        if "target" in batch:
            out["target"] = batch["target"]
        return out

    def predict_outputs(self, outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"embeddings": outputs["embeddings"]}
