"""Semantic segmentation on the backbone → neck → head model: class logits for every pixel.

Output keys of ``forward_with_gt``:

- ``prediction``: logits at the input image's size: (B, C, H, W) for C classes; for one class
  (binary segmentation, the head's ``num_classes: 1``) the channel is squeezed to (B, H, W), as
  TorchOk did, so ``BCEWithLogitsLoss``, ``DiceLoss(mode: binary)`` and torchmetrics' binary
  metrics take it with the (B, H, W) target as it is;
- ``prediction_aux``: the auxiliary logits of a head that has them (``OCRSegmentationHead``),
  shaped like ``prediction``; a loss maps it like ``prediction`` (HRNet-OCR trains both);
- ``target``: the batch's ``mask`` (B, H, W) as int64 class indices (binary: 0 and 1), when the
  batch has one (a TorchOk-style dataset's ``target`` is read if there is no ``mask``). Values
  equal to a loss's or metric's ``ignore_index`` are left to that loss or metric.

Images whose height or width is not a multiple of the backbone's coarsest stride are zero-padded
at the bottom and right before the model and the logits are cropped back, so any size works
(timm's HRNets, for one, fail on sizes that do not halve evenly). The head must upsample to the
input size (its ``do_interpolate``).

``okc predict`` writes one PNG per image (class index per pixel, a palette for viewing) and a CSV
from dataset index to PNG path (see ``okc.tasks.mask_writer``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from okc.errors import ConfigError
from okc.models import build_model
from okc.models.heads.segmentation import gives_aux_logits
from okc.registry import BACKBONES, HEADS, TASKS
from okc.tasks.base import BaseTask, Batch
from okc.tasks.classification import ModelTaskParams
from okc.tasks.mask_writer import MaskWriter
from okc.tasks.predictions import PredictionWriter


@TASKS.register
class SegmentationTask(BaseTask):
    """TorchOk's ``SegmentationTask``: ``backbone_*``, ``neck_*`` and ``head_*`` name and size the
    model pieces (no pooling: the head takes the neck's map); ``inputs`` is the export shape.

    The number of classes is the head's ``num_classes``; one class means binary segmentation
    (see the module doc for the output shapes).
    """

    # What every head gives; ``declared_outputs`` adds ``prediction_aux`` for heads that have it.
    output_keys = ("prediction", "target")

    @attrs.frozen(kw_only=True)
    class Params(ModelTaskParams):
        head_name: str

        def problems(self) -> list[ConfigError]:
            errors = super().problems()
            if self.head_params.get("do_interpolate") is False:
                errors.append(ConfigError(
                    "head_params.do_interpolate",
                    "SegmentationTask compares logits with masks at the input size; remove "
                    "do_interpolate: false",
                ))  # fmt: skip
            return errors

    def __init__(self, params: Any = None, /, **keys: Any) -> None:
        super().__init__(params, **keys)
        backbone = backbone_defaults(self.params.backbone_name, self.params.backbone_params)
        self.model = build_model(attrs.evolve(self.params, backbone_params=backbone))
        head = self.model.head
        self.has_aux = gives_aux_logits(head)
        self.num_classes = int(head.out_channels)
        self.pad_multiple = int(max(self.model.backbone.out_strides))
        self.output_keys = self.declared_outputs({"head_name": self.params.head_name})

    @classmethod
    def declared_outputs(cls, params: Mapping[str, Any]) -> tuple[str, ...]:
        """The keys ``forward_with_gt`` gives for these params (``prediction_aux`` with OCR)."""
        head = HEADS.find(params["head_name"]) if isinstance(params.get("head_name"), str) else None
        aux = ("prediction_aux",) if gives_aux_logits(head) else ()
        return ("prediction", *aux, "target")

    def forward(self, x: Tensor) -> Tensor:
        return self._logits(x, with_aux=False)[0]

    def forward_with_gt(self, batch: Batch) -> dict[str, Tensor]:
        logits, aux = self._logits(batch[self.input_key], with_aux=self.has_aux)
        out = {"prediction": logits}
        if aux is not None:
            out["prediction_aux"] = aux
        target = batch.get("mask", batch.get("target"))
        if target is not None:
            out["target"] = target if target.dtype == torch.int64 else target.long()
        return out

    def _logits(self, image: Tensor, *, with_aux: bool) -> tuple[Tensor, Tensor | None]:
        height, width = image.shape[-2:]
        pad_h, pad_w = -height % self.pad_multiple, -width % self.pad_multiple
        # TorchScript tracing sees sizes as tensors: pad and crop always (no-ops at 0), no `if`.
        padded = torch.jit.is_tracing() or bool(pad_h or pad_w)
        x = F.pad(image, (0, pad_w, 0, pad_h)) if padded else image
        features = self.model.forward_features(x)
        size = x.shape[-2:]
        if with_aux:  # through the head's __call__, so FSDP's hooks see it
            outputs = self.model.head(features, None, image_size=size, with_aux=True)
        else:
            outputs = (self.model.forward_head(features, image_size=size),)
        if padded:
            outputs = tuple(o[..., :height, :width] for o in outputs)
        if self.num_classes == 1:
            outputs = tuple(o.squeeze(1) for o in outputs)
        return outputs[0], (outputs[1] if with_aux else None)

    def predict_outputs(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """``prediction``: the class index of every pixel (binary: logit > 0), (B, H, W) int64."""
        logits = outputs["prediction"]
        if self.num_classes == 1:
            return {"prediction": (logits > 0).long()}
        return {"prediction": logits.argmax(dim=1)}

    def prediction_writer(
        self, path: str | Path, *, rank: int = 0, world_size: int = 1
    ) -> PredictionWriter:
        return MaskWriter(path, rank=rank, world_size=world_size, num_classes=self.num_classes)


def backbone_defaults(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """timm HRNets give their raw branch maps here, as TorchOk's HRNets did (see necks/hrnet.py).

    Only when ``backbone_params`` leaves ``feature_location`` unset and ``name`` is timm's (not a
    registered backbone of the same name).
    """
    is_timm_hrnet = name.split(".")[0].startswith("hrnet_") and name not in BACKBONES.registered()
    if not is_timm_hrnet or "feature_location" in params:
        return params
    return {**params, "feature_location": ""}
