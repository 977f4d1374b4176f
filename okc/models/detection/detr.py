"""DETR (Carion et al., 2020): a transformer over the last feature map, ``num_query`` learned
queries, each predicting one box or background; trained with a one-to-one Hungarian matching.
okc's own module following mmdet 2.x's DETRHead, which TorchOk wrapped.

Loss inputs (the names TorchOk's DETR configs map; rows are every query of every image of every
decoder layer the loss covers, see ``DETRHead``):

- ``cls_scores`` (M, C + 1) logits, background last; ``labels`` (M,) the class a query learns
  (``C``: background); ``label_weights`` (M,): 1, or ``bg_cls_weight`` for background queries;
  ``cls_avg_factor`` (scalar): matched queries + ``bg_cls_weight`` x unmatched ones (at least 1);
- ``bbox_preds`` / ``bbox_targets`` (M, 4) normalised ``cx, cy, w, h`` (zeros where unmatched),
  ``bbox_weights`` (M, 4): 1 for matched queries, 0 else; ``bboxes`` / ``bboxes_gt`` (M, 4) the
  same as ``x1, y1, x2, y2`` pixels of the input; ``num_total_pos`` (scalar): matched queries of
  one layer (mean over training processes, at least 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, clip_boxes_to_image

from okc.errors import ParamError
from okc.models.detection.configs import RELU
from okc.models.detection.dense import DenseHead, Detections, HeadParams, check_labels
from okc.models.detection.detr_configs import (
    CostCfg,
    DetrTestCfg,
    DetrTrainCfg,
    HungarianAssignerCfg,
    PositionalEncodingCfg,
    TransformerCfg,
)
from okc.models.detection.hungarian import hungarian_match, match_cost
from okc.models.detection.transformer import DetrTransformer, box_mlp, sine_positional_encoding

#: TorchOk's DETR defaults
_TRAIN = DetrTrainCfg(
    assigner=HungarianAssignerCfg(
        reg_cost=CostCfg(type="BBoxL1Cost", weight=5.0),
        iou_cost=CostCfg(type="IoUCost", iou_mode="giou", weight=2.0),
    )
)


class DETRHead(DenseHead):
    """DETR head with mmdet's parameters.

    Args:
        num_classes: object classes (the classifier adds one for background, last).
        in_channels, in_strides: the neck's (or backbone's) channels and strides (supplied by
            okc); DETR reads only the last (coarsest) map.
        num_query: learned queries, the most objects an image can have.
        num_reg_fcs: hidden layers of the box MLP (mmdet's default 2: a 3-layer MLP).
        bg_cls_weight: the classification weight of background queries (DETR's "eos_coef").
            mmdet put it into the cross-entropy's ``class_weight``; okc puts it into
            ``label_weights``, which is the same product for the configs' ``class_weight: 1.0``
            (a per-class ``class_weight`` list in the loss multiplies on top).
        transformer: ``{type: Transformer, encoder, decoder}`` (``detr_configs.TransformerCfg``).
        sync_cls_avg_factor: average ``cls_avg_factor`` over training processes.
        positional_encoding: ``{type: SinePositionalEncoding, num_feats, normalize, ...}``.
        train_cfg: ``{assigner: {type: HungarianAssigner, cls_cost, reg_cost, iou_cost}}``.
        test_cfg: ``{max_per_img}``: detections kept per image (at most ``num_query``).

    Auxiliary losses: with ``transformer.decoder.return_intermediate`` every decoder layer's
    output is matched and trained, as in mmdet. Rather than new output keys (loss_cls_d0, ...)
    that TorchOk's configs do not map, every layer's rows are concatenated into the same loss
    inputs. The layers share ``cls_avg_factor`` and ``num_total_pos`` (each layer matches
    ``min(num_query, boxes)`` queries per image), so a loss of ``sum / avg_factor`` over the
    concatenation is exactly the sum of the per-layer losses, which is what TorchOk computed (it
    called the joint loss once per layer and added the results).

    Padding: ``forward`` takes an optional (B, H, W) ``pad_mask`` of padded input pixels, which
    the positional encoding and the attention then skip. okc's batches do not record where a
    transform padded (TorchOk re-derived it from ``orig_img_shape``, assuming FitResize with
    centred padding), so the task passes none and every cell is attended, as in TorchOk's export
    and predict paths.
    """

    loss_keys = (
        "cls_scores", "labels", "label_weights", "cls_avg_factor", "bboxes", "bboxes_gt",
        "bbox_weights", "num_total_pos", "bbox_preds", "bbox_targets",
    )  # fmt: skip

    @attrs.frozen(kw_only=True)
    class Params(HeadParams):
        transformer: TransformerCfg
        num_query: int = 100
        num_reg_fcs: int = 2
        bg_cls_weight: float = 0.1
        sync_cls_avg_factor: bool = False
        positional_encoding: PositionalEncodingCfg = PositionalEncodingCfg(
            num_feats=128, normalize=True
        )
        train_cfg: DetrTrainCfg = _TRAIN
        test_cfg: DetrTestCfg = DetrTestCfg()

        def __attrs_post_init__(self) -> None:
            super().__attrs_post_init__()
            for key in ("num_query", "num_reg_fcs"):
                if getattr(self, key) < 1:
                    raise ParamError(key, f"must be at least 1, got {getattr(self, key)}")
            if self.bg_cls_weight < 0:
                raise ParamError("bg_cls_weight", f"must be >= 0, got {self.bg_cls_weight}")
            feats, dims = self.positional_encoding.num_feats, self.transformer.embed_dims
            if 2 * feats != dims:
                raise ParamError(
                    "positional_encoding.num_feats",
                    f"{feats}, but it must be half the transformer's embed_dims ({dims}): the "
                    "encoding has num_feats features per axis",
                )

    def __init__(self, params: Params | None = None, /, **keys: Any) -> None:
        super().__init__(params, **keys)
        p = self.params
        self.encoding, self.assigner = p.positional_encoding, p.train_cfg.assigner
        self.num_query, self.bg_cls_weight = p.num_query, float(p.bg_cls_weight)
        self.sync_cls_avg_factor = p.sync_cls_avg_factor
        dims = p.transformer.embed_dims
        self.input_proj = nn.Conv2d(self.in_channels, dims, kernel_size=1)
        self.transformer = DetrTransformer(p.transformer)
        self.query_embedding = nn.Embedding(p.num_query, dims)
        self.fc_cls = nn.Linear(dims, p.num_classes + 1)
        self.reg = box_mlp(dims, p.num_reg_fcs, RELU)

    # --- forward -------------------------------------------------------------------------------

    def forward(
        self, features: Sequence[Tensor], pad_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Class logits (L, B, Q, C + 1) and boxes (L, B, Q, 4) as normalised ``cx, cy, w, h``
        per decoder layer (L = 1 without ``return_intermediate``), from the last map."""
        x = self.input_proj(features[-1])
        mask = None
        if pad_mask is not None:
            mask = F.interpolate(pad_mask[:, None].float(), size=x.shape[-2:])[:, 0].bool()
        grid = mask if mask is not None else x.new_zeros(x.shape[0], *x.shape[-2:], dtype=bool)
        pos = sine_positional_encoding(grid, self.encoding)
        out = self.transformer(x, mask, self.query_embedding.weight, pos)
        return self.fc_cls(out), self.reg(out).float().sigmoid()

    def level_sizes(self, raw: Any) -> list[int]:
        return [raw[0].shape[2]]

    def decode(self, raw: Any, image_size: Sequence[int]) -> Tensor:
        """(B, Q, 4 + C) from the last decoder layer: boxes in pixels (clipped to the image),
        class probabilities without background (softmax over C + 1, background dropped)."""
        cls_scores, boxes = raw[0][-1], raw[1][-1]
        height, width = int(image_size[0]), int(image_size[1])
        xyxy = box_convert(boxes.float(), "cxcywh", "xyxy") * boxes.new_tensor(
            [width, height, width, height], dtype=torch.float32
        )
        xyxy = clip_boxes_to_image(xyxy, (height, width))
        scores = cls_scores.float().softmax(-1)[..., :-1]
        return torch.cat([xyxy, scores], dim=-1)

    def detections(self, dense: Tensor, level_sizes: Sequence[int]) -> Detections:
        """Per image the ``max_per_img`` queries of highest class probability, each with its
        best class (mmdet's softmax rule; no NMS, no threshold)."""
        out = []
        for image in dense.float():
            scores, labels = image[:, 4:].max(-1)
            scores, keep = scores.topk(min(self.test_cfg.max_per_img, scores.shape[0]))
            out.append({"boxes": image[keep, :4], "scores": scores, "labels": labels[keep]})
        return out

    # --- training ------------------------------------------------------------------------------

    @torch.compiler.disable  # Hungarian matching runs on the CPU with data-dependent shapes
    def loss_inputs(
        self, raw: Any, gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor],
        image_size: Sequence[int],
    ) -> dict[str, Tensor]:  # fmt: skip
        check_labels(gt_labels, self.num_classes)
        cls_all, box_all = raw
        layers, batch, queries = cls_all.shape[:3]
        device = box_all.device
        boxes = [b.to(device, torch.float32).reshape(-1, 4) for b in gt_boxes]
        classes = [c.to(device).long().reshape(-1) for c in gt_labels]
        pairs = [(layer, b) for layer in range(layers) for b in range(batch) if boxes[b].shape[0]]
        costs = [
            match_cost(cls_all[layer, b].detach(), box_all[layer, b].detach(), boxes[b], classes[b],
                       image_size, self.assigner)
            for layer, b in pairs
        ]  # fmt: skip
        height, width = float(image_size[0]), float(image_size[1])
        factor = torch.tensor([width, height, width, height], device=device)
        labels = torch.full((layers, batch, queries), self.num_classes, device=device)
        targets = torch.zeros(layers, batch, queries, 4, device=device)
        for (layer, b), (rows, cols) in zip(pairs, hungarian_match(costs), strict=True):
            labels[layer, b, rows] = classes[b][cols]
            targets[layer, b, rows] = box_convert(boxes[b][cols] / factor, "xyxy", "cxcywh")
        positive = labels != self.num_classes
        num_pos = sum(min(queries, b.shape[0]) for b in boxes)
        num_neg = batch * queries - num_pos
        cls_avg = torch.tensor(num_pos + num_neg * self.bg_cls_weight, device=device)
        if self.sync_cls_avg_factor:
            cls_avg = self._reduce(cls_avg)
        bbox_preds = box_all.float().reshape(-1, 4)
        bbox_targets = targets.reshape(-1, 4)
        weights = positive.reshape(-1, 1).expand(-1, 4).float()
        flat_labels = labels.reshape(-1)
        return {
            "cls_scores": cls_all.float().reshape(-1, self.num_classes + 1),
            "labels": flat_labels,
            "label_weights": torch.where(positive.reshape(-1), 1.0, self.bg_cls_weight),
            "cls_avg_factor": cls_avg.clamp(min=1.0),
            "bboxes": box_convert(bbox_preds, "cxcywh", "xyxy") * factor,
            "bboxes_gt": box_convert(bbox_targets, "cxcywh", "xyxy") * factor,
            "bbox_weights": weights,
            "num_total_pos": self._reduce(torch.tensor(float(num_pos), device=device)).clamp(
                min=1.0
            ),
            "bbox_preds": bbox_preds,
            "bbox_targets": bbox_targets,
        }
