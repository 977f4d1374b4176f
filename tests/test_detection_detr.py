"""DETRHead: TorchOk's DETR configs check unchanged; the head builds from their nested params
(shrunk), matches queries to boxes as a brute-force search does, trains (the loss falls on a
fixed batch), handles images without boxes, and predicts in the task's format."""

from __future__ import annotations

import copy
import itertools
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torchvision.ops import generalized_box_iou

import okc
from okc.api import check
from okc.config.load import experiment_from_data
from okc.engine.build import build_task
from okc.errors import ConfigErrors
from okc.losses import build_joint_loss
from okc.models.detection import DETRHead, build_detection_model
from okc.models.detection.detr_configs import CostCfg, HungarianAssignerCfg
from okc.models.detection.hungarian import hungarian_match, match_cost
from okc.tasks.detection import read_predictions

CONFIGS = Path(__file__).parent / "torchok" / "examples" / "configs" / "detection"
DETR_FILES = ("detr_resnet50_coco.yaml", "detr_gcvit-t_coco.yaml")


def _torchok_file(name: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIGS / name).read_text())


def shrunk_head(name: str = "detr_resnet50_coco.yaml", **extra: Any) -> dict[str, Any]:
    """The file's ``head_params`` at test size: 32 dims, 1 encoder and 2 decoder layers, 6
    queries, 3 classes, no dropout; everything else (orders, costs, weights) as the file says."""
    head = copy.deepcopy(_torchok_file(name)["task"]["params"]["head_params"])
    head.update(num_classes=3, num_query=6, test_cfg={"max_per_img": 4})
    for part, layers in (("encoder", 1), ("decoder", 2)):
        cfg = head["transformer"][part]
        cfg["num_layers"] = layers
        layer = cfg["transformerlayers"]
        layer.update(feedforward_channels=64, ffn_dropout=0.0)
        attns = layer["attn_cfgs"]
        for attn in attns if isinstance(attns, list) else [attns]:
            attn.update(embed_dims=32, num_heads=4, dropout=0.0)
    head["positional_encoding"]["num_feats"] = 16
    head.update(extra)
    return head


def tiny_model(**head: Any) -> Any:
    params = {"backbone_name": "test_resnet", "num_scales": 1, "head_name": "DETRHead",
              "head_params": shrunk_head(**head)}  # fmt: skip
    return build_detection_model(params)


# --- TorchOk's files -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", DETR_FILES)
def test_torchok_detr_files_check_unchanged(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DB_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("S3_ARTIFACT_BUCKET", f"file://{tmp_path / 'artifacts'}")
    assert check(okc.load_experiment(CONFIGS / name)) == []


@pytest.mark.parametrize("name", DETR_FILES)
def test_head_builds_from_the_files_nested_params(name: str) -> None:
    head = DETRHead(in_channels=16, in_strides=[32], **shrunk_head(name))
    assert head.transformer.return_intermediate and len(head.transformer.decoder) == 2
    assert head.bg_cls_weight == 0.1 and head.num_query == 6 and head.fc_cls.out_features == 4
    costs = head.assigner
    assert (costs.cls_cost.weight, costs.reg_cost.weight, costs.iou_cost.weight) == (1, 5, 2)
    assert costs.box_format == "xywh" and costs.iou_mode == "giou"
    assert head.encoding.normalize and head.encoding.num_feats == 16


# --- bad settings name their key ----------------------------------------------------------------

_ENC_LAYER = "transformer.encoder.transformerlayers"


def _with(path: str, value: Any) -> dict[str, Any]:
    head = shrunk_head()
    *parents, last = path.split(".")
    node: Any = head
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return head


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (f"{_ENC_LAYER}.attn_cfgs.0.nmu_heads", 4, r"attn_cfgs\.0\.nmu_heads: .*did you mean"),
        (f"{_ENC_LAYER}.operation_order", ["norm", "self_attn", "norm", "ffn"],
         r"operation_order: the encoder runs DETR's post-norm layer"),
        ("transformer.decoder.transformerlayers.attn_cfgs.num_heads", 5,
         r"attn_cfgs\.num_heads: embed_dims \(32\) must be a positive multiple"),
        ("positional_encoding.num_feats", 8, r"positional_encoding\.num_feats: 8, but it must be"),
        ("train_cfg.assigner.cls_cost.type", "FocalLossCost", r"cls_cost\.type: .*softmax"),
        ("train_cfg.assigner.reg_cost.box_format", "cxcywh", r"reg_cost\.box_format"),
        ("test_cfg.score_thr", 0.1, r"test_cfg\.score_thr: .*has no parameter"),
        ("transformer.act_cfg", {"type": "ReLU"}, r"transformer\.act_cfg: .*has no parameter"),
    ],
)  # fmt: skip
def test_bad_nested_settings_name_their_path(path: str, value: Any, message: str) -> None:
    params = {"backbone_name": "test_resnet", "num_scales": 1, "head_name": "DETRHead",
              "head_params": _with(path, value)}  # fmt: skip
    with pytest.raises(ConfigErrors) as info:  # okc check's route: nothing is built
        build_detection_model(params)
    text = "\n".join(f"{e.path}: {e.message}" for e in info.value.errors)
    assert all(e.path.startswith("head_params.") for e in info.value.errors), text
    assert re.search(message, text), text
    with pytest.raises(ConfigErrors):  # and building the head directly refuses it too
        DETRHead(in_channels=16, in_strides=[32], **_with(path, value))


# --- matching -----------------------------------------------------------------------------------


def test_matching_equals_a_brute_force_search() -> None:
    torch.manual_seed(0)
    cfg = HungarianAssignerCfg(
        reg_cost=CostCfg(type="BBoxL1Cost", weight=5.0, box_format="xywh"),
        iou_cost=CostCfg(type="IoUCost", weight=2.0),
    )
    queries, size = 6, (48, 64)
    logits = torch.randn(queries, 4)
    boxes = torch.rand(queries, 4) * 0.4 + torch.tensor([0.3, 0.3, 0.1, 0.1])
    gt = torch.tensor([[2.0, 4.0, 30.0, 40.0], [20.0, 10.0, 60.0, 30.0], [5, 5, 12, 20]])
    labels = torch.tensor([0, 2, 1])
    cost = match_cost(logits, boxes, gt, labels, size, cfg)
    # one entry by hand: -p(class) + 5 * L1(normalised cxcywh) - 2 * GIoU(pixels)
    q, g = 1, 1
    factor = torch.tensor([64.0, 48.0, 64.0, 48.0])
    gxyxy = gt[g] / factor
    gcxcywh = torch.cat([(gxyxy[:2] + gxyxy[2:]) / 2, gxyxy[2:] - gxyxy[:2]])
    cx, cy, w, h = boxes[q]
    pred = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * factor
    hand = (-logits[q].softmax(-1)[labels[g]] + 5 * (boxes[q] - gcxcywh).abs().sum()
            - 2 * generalized_box_iou(pred[None], gt[g][None])[0, 0])  # fmt: skip
    assert cost[q, g].item() == pytest.approx(hand.item(), rel=1e-5)

    ((rows, cols),) = hungarian_match([cost])
    assert len(rows) == 3 and sorted(cols.tolist()) == [0, 1, 2]
    best = min(
        sum(cost[q, g].item() for g, q in enumerate(chosen))
        for chosen in itertools.permutations(range(queries), 3)
    )
    assert cost[rows, cols].sum().item() == pytest.approx(best, rel=1e-6)


def test_matching_of_a_random_wide_matrix_is_optimal() -> None:
    torch.manual_seed(1)
    for _ in range(5):
        cost = torch.randn(5, 4)
        ((rows, cols),) = hungarian_match([cost])
        best = min(
            sum(cost[q, g].item() for g, q in enumerate(chosen))
            for chosen in itertools.permutations(range(5), 4)
        )
        assert cost[rows, cols].sum().item() == pytest.approx(best, abs=1e-5)


# --- loss inputs ----------------------------------------------------------------------------------


def test_loss_inputs_cover_every_decoder_layer() -> None:
    model = tiny_model().train()
    raw = model.raw(torch.rand(2, 3, 64, 64))
    assert raw[0].shape == (2, 2, 6, 4) and raw[1].shape == (2, 2, 6, 4)
    boxes = [torch.tensor([[2.0, 3.0, 30.0, 40.0], [10.0, 10.0, 60.0, 50.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([0, 2]), torch.zeros(0, dtype=torch.long)]
    out = model.head.loss_inputs(raw, boxes, labels, (64, 64))
    assert set(out) == set(DETRHead.loss_keys)
    rows = 2 * 2 * 6  # layers x images x queries
    assert out["cls_scores"].shape == (rows, 4) and out["bboxes"].shape == (rows, 4)
    assert (out["labels"] != 3).sum() == 2 * 2  # both boxes matched in each layer
    assert out["num_total_pos"].item() == 2.0
    assert out["cls_avg_factor"].item() == pytest.approx(2 + 10 * 0.1)
    assert torch.equal(out["label_weights"] == 1.0, out["labels"] != 3)
    positive = out["labels"] != 3
    assert torch.allclose(out["bboxes_gt"][positive].sort(0).values[::2],
                          boxes[0].sort(0).values, atol=1e-4)  # fmt: skip


def test_auxiliary_rows_sum_to_the_per_layer_losses(tmp_path: Path) -> None:
    """Concatenating the layers' rows equals adding each layer's loss (shared avg factors)."""
    joint = build_joint_loss(_experiment(tmp_path).joint_loss)
    model = tiny_model().train()
    raw = model.raw(torch.rand(2, 3, 64, 64))
    boxes = [torch.tensor([[2.0, 3.0, 30.0, 40.0]]), torch.tensor([[8.0, 8.0, 50.0, 60.0]])]
    labels = [torch.tensor([1]), torch.tensor([0])]
    out = model.head.loss_inputs(raw, boxes, labels, (64, 64))
    total, _ = joint(out)
    per_layer = 0.0
    for layer in range(2):
        part = slice(layer * 12, (layer + 1) * 12)
        sliced = {k: (v[part] if v.dim() else v) for k, v in out.items()}
        per_layer = per_layer + joint(sliced)[0]
    assert total.item() == pytest.approx(float(per_layer.detach()), rel=1e-5)


# --- the task end to end ------------------------------------------------------------------------

TINY = """
task:
  name: SingleStageDetectionTask
  params:
    backbone_name: test_resnet
    num_scales: 1
    head_name: DETRHead
    inputs: [{shape: [3, 64, 64], dtype: float32}]
optimization:
  - optimizer: {name: AdamW, params: {lr: 0.0005}}
data:
  TRAIN:
    - dataset:
        name: Shapes
        params: &shapes {num_samples: 4, image_size: 64, num_classes: 3, num_shapes: 2,
                         with_boxes: true}
        transform: [{name: Normalize, params: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}]
      dataloader: {batch_size: 2, drop_last: true}
  VALID:
    - dataset:
        name: Shapes
        params: {<<: *shapes, split: valid}
        transform: [{name: Normalize, params: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}]
      dataloader: {batch_size: 2}
  PREDICT:
    - dataset:
        name: Shapes
        params: {<<: *shapes, split: test, num_samples: 3, test_mode: true}
        transform: [{name: Normalize, params: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}]
      dataloader: {batch_size: 2}
metrics:
  - name: MMDetectionMAP
    tag: mAP50
    params: {num_classes: 3}
    mapping: {preds: prediction, target: target}
    phases: [VALID]
trainer: {max_epochs: 1, log_every_n_steps: 1, enable_progress_bar: false,
          num_sanity_val_steps: 0}
seed_params: {seed: 0}
"""


def _experiment(tmp_path: Path) -> okc.Experiment:
    """TINY with the TorchOk file's joint_loss unchanged and its head shrunk."""
    data = yaml.safe_load(TINY)
    data["task"]["params"]["head_params"] = shrunk_head()
    data["joint_loss"] = _torchok_file("detr_resnet50_coco.yaml")["joint_loss"]
    data["logger"] = {"log_dir": str(tmp_path / "logs"), "experiment_name": "detr"}
    return experiment_from_data(data, [], name="detr")


def _batch(empty: bool) -> dict[str, Any]:
    torch.manual_seed(3)
    boxes = [torch.tensor([[4.0, 6.0, 30.0, 40.0], [34.0, 20.0, 60.0, 56.0]]),
             torch.tensor([[10.0, 10.0, 50.0, 30.0]])]  # fmt: skip
    labels = [torch.tensor([0, 2]), torch.tensor([1])]
    if empty:
        boxes[1], labels[1] = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    return {"image": torch.rand(2, 3, 64, 64), "bboxes": boxes, "label": labels}


@pytest.mark.parametrize("empty", ["none", "one", "all"])
def test_losses_are_finite_with_and_without_boxes(tmp_path: Path, empty: str) -> None:
    exp = _experiment(tmp_path)
    task = build_task(exp).train()
    joint = build_joint_loss(exp.joint_loss)
    batch = _batch(empty == "one")
    if empty == "all":
        batch["bboxes"] = [torch.zeros(0, 4)] * 2
        batch["label"] = [torch.zeros(0, dtype=torch.long)] * 2
    outputs = task.forward_with_gt(batch)
    total, parts = joint(outputs)
    assert set(parts) == {"loss_cls", "loss_iou", "loss_bbox"}
    assert math.isfinite(total.item()) and all(math.isfinite(v.item()) for v in parts.values())
    if empty == "all":
        assert outputs["num_total_pos"].item() == 1.0 and parts["loss_bbox"].item() == 0.0
    total.backward()
    grads = [p.grad for p in task.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_a_few_steps_on_a_fixed_batch_lower_the_loss(tmp_path: Path) -> None:
    exp = _experiment(tmp_path)
    torch.manual_seed(0)
    task = build_task(exp).train()
    joint = build_joint_loss(exp.joint_loss)
    batch = _batch(empty=True)
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        total, _ = joint(task.forward_with_gt(batch))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(total.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_fits_validates_and_predicts_in_the_tasks_format(tmp_path: Path) -> None:
    exp = _experiment(tmp_path)
    assert check(exp) == []
    task = build_task(exp).eval()
    dense = task(torch.rand(2, 3, 64, 64))
    assert dense.shape == (2, 6, 4 + 3)  # export's output: every query's box and class scores
    assert torch.all(dense[..., 4:].sum(-1) <= 1.0 + 1e-5)  # softmax without background
    result = okc.fit(exp)
    assert result.global_step == 2
    path = okc.predict(exp, checkpoint=result.last_checkpoint, output=tmp_path / "boxes.json")
    images = read_predictions(path)
    assert [im["index"] for im in images] == [0, 1, 2]
    for im in images:
        assert len(im["boxes"]) == len(im["scores"]) == len(im["labels"]) == 4  # max_per_img
        assert all(0 <= v <= 64 for box in im["boxes"] for v in box)
        assert all(0 <= label < 3 for label in im["labels"])
        assert im["scores"] == sorted(im["scores"], reverse=True)


# --- padding ------------------------------------------------------------------------------------


def test_padded_cells_do_not_change_the_output() -> None:
    head = DETRHead(in_channels=16, in_strides=[32], **shrunk_head()).eval()
    features = torch.rand(1, 16, 4, 4)
    pad = torch.zeros(1, 128, 128, dtype=torch.bool)
    pad[:, :, 64:] = True  # the right half of the input is padding
    changed = features.clone()
    changed[..., 2:] = torch.rand(1, 16, 4, 2) * 10
    a, b = head([features], pad), head([changed], pad)
    assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-5)
    unmasked = head([changed])
    assert not torch.allclose(a[0], unmasked[0], atol=1e-5)


def test_without_intermediate_outputs_only_the_last_layer_learns() -> None:
    head_params = shrunk_head()
    head_params["transformer"]["decoder"]["return_intermediate"] = False
    head = DETRHead(in_channels=16, in_strides=[32], **head_params)
    raw = head([torch.rand(2, 16, 2, 2)])
    assert raw[0].shape == (1, 2, 6, 4)
    out = head.loss_inputs(raw, [torch.tensor([[1.0, 1.0, 9.0, 9.0]])] * 2,
                           [torch.tensor([0])] * 2, (16, 16))  # fmt: skip
    assert out["cls_scores"].shape == (12, 4)
