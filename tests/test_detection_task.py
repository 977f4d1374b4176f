"""SingleStageDetectionTask end to end: FCOS and RetinaNet train, empty images give finite losses,
predictions read back, TorchOk's DETR config checks unchanged (DETR's own tests:
test_detection_detr.py), and TorchOk's FCOS config checks unchanged and trains on a tiny COCO."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
import yaml
from PIL import Image

import okc
from okc.api import check, export  # the functions: imported submodules shadow okc.check/export
from okc.config.load import experiment_from_data
from okc.engine.build import build_task
from okc.losses import build_joint_loss
from okc.tasks.detection import read_predictions

SPEC = Path(__file__).parent / "torchok" / "examples" / "configs" / "detection"  # vendored

TINY = """
task:
  name: SingleStageDetectionTask
  params:
    backbone_name: test_resnet
    num_scales: 2
    neck_name: FPN
    neck_params: {out_channels: 16, num_outs: 2}
    head_name: FCOSHead
    head_params:
      num_classes: 3
      feat_channels: 16
      stacked_convs: 1
      norm_cfg: {type: GN, num_groups: 4}
    inputs: [{shape: [3, 32, 32], dtype: float32}]
joint_loss:
  normalize_weights: false
  losses:
    - name: MMFocalLoss
      tag: loss_cls
      mapping: {pred: flatten_cls_scores, target: flatten_labels, avg_factor: num_pos}
    - name: MMIoULoss
      tag: loss_bbox
      mapping: {pred: pos_decoded_bbox_preds, target: pos_decoded_target_preds,
                weight: pos_centerness_targets, avg_factor: centerness_denorm}
    - name: MMCrossEntropyLoss
      tag: loss_centerness
      params: {use_sigmoid: true}
      mapping: {cls_score: pos_centerness, label: pos_centerness_targets, avg_factor: num_pos}
optimization:
  - optimizer: {name: AdamW, params: {lr: 0.001}}
data:
  TRAIN:
    - dataset:
        name: Shapes
        params: &shapes {num_samples: 8, image_size: 32, num_classes: 3, num_shapes: 2,
                         with_boxes: true}
        transform: [{name: Normalize, params: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}]
        augment: [{name: HorizontalFlip}]
      dataloader: {batch_size: 4, shuffle: true, drop_last: true}
  VALID:
    - dataset:
        name: Shapes
        params: {<<: *shapes, split: valid}
        transform: [{name: Normalize, params: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}]
      dataloader: {batch_size: 4}
  PREDICT:
    - dataset:
        name: Shapes
        params: {<<: *shapes, split: test, num_samples: 5, test_mode: true}
        transform: [{name: Normalize, params: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}]
      dataloader: {batch_size: 2}
metrics:
  - name: MMDetectionMAP
    tag: mAP50
    params: {num_classes: 3}
    mapping: {preds: prediction, target: target}
    phases: [VALID]
  - name: MeanAveragePrecision
    mapping: {preds: prediction, target: target}
    phases: [VALID]
trainer: {max_epochs: 1, log_every_n_steps: 1, enable_progress_bar: false,
          num_sanity_val_steps: 0}
seed_params: {seed: 0}
"""

RETINA_HEAD = [
    "task.params.head_name=RetinaNetHead",
    "task.params.head_params={num_classes: 3, feat_channels: 16, stacked_convs: 1,"
    " anchor_generator: {octave_base_scale: 2, scales_per_octave: 2}}",
    "joint_loss.losses.1.mapping={pred: pos_decoded_bbox_preds, target: pos_decoded_target_preds,"
    " avg_factor: num_pos}",
    "joint_loss.losses.1.name=MMGIoULoss",
    "joint_loss.losses.2.name=MML1Loss",
    "joint_loss.losses.2.params={}",
    "joint_loss.losses.2.mapping={pred: pos_bbox_preds, target: pos_bbox_targets,"
    " avg_factor: num_pos}",
]


def tiny(tmp_path: Path, *overrides: str) -> okc.Experiment:
    data = yaml.safe_load(TINY)
    data["logger"] = {"log_dir": str(tmp_path / "logs"), "experiment_name": "det"}
    return experiment_from_data(data, overrides, name="det")


def _jsonl(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("head", ["fcos", "retinanet"])
def test_trains_two_steps_and_validates(tmp_path: Path, head: str) -> None:
    exp = tiny(tmp_path, *(RETINA_HEAD if head == "retinanet" else ()))
    assert check(exp) == []
    before = {k: v.clone() for k, v in build_task(exp).model.state_dict().items()}
    result = okc.fit(exp)
    assert result.global_step == 2
    records = _jsonl(result.run_dir)
    steps = [r for r in records if "train/loss_step" in r]
    assert len(steps) == 2 and all(math.isfinite(r["train/loss_step"]) for r in steps)
    assert {"train/loss_cls_step", "train/loss_bbox_step"} <= set(steps[0])
    valid = next(r for r in records if "valid/mAP50" in r)
    assert 0.0 <= valid["valid/mAP50"] <= 1.0 and math.isfinite(valid["valid/loss"])
    assert "valid/MeanAveragePrecision_map_50" in valid
    trained = torch.load(result.last_checkpoint, weights_only=True)["model"]
    assert any(not torch.equal(before[k], trained[k]) for k in before if k.startswith("head."))


@pytest.mark.parametrize("head", ["fcos", "retinanet"])
def test_images_without_boxes_give_finite_losses(tmp_path: Path, head: str) -> None:
    exp = tiny(tmp_path, *(RETINA_HEAD if head == "retinanet" else ()))
    task = build_task(exp).train()
    joint = build_joint_loss(exp.joint_loss)
    image = torch.rand(2, 3, 32, 32, requires_grad=False)
    batch = {"image": image, "bboxes": [torch.zeros(0, 4)] * 2,
             "label": [torch.zeros(0, dtype=torch.long)] * 2}  # fmt: skip
    outputs = task.forward_with_gt(batch)
    assert outputs["num_pos"].item() == 1.0  # clamped: nothing to divide by zero
    total, parts = joint(outputs)
    assert math.isfinite(total.item()) and all(math.isfinite(v.item()) for v in parts.values())
    total.backward()
    grads = [p.grad for p in task.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert outputs["target"][0]["boxes"].shape == (0, 4)


def test_predict_writes_boxes_that_read_back(tmp_path: Path) -> None:
    exp = tiny(tmp_path, "task.params.head_params.test_cfg={score_thr: 0.0, max_per_img: 3}")
    result = okc.fit(exp)
    path = okc.predict(exp, checkpoint=result.last_checkpoint, output=tmp_path / "boxes.csv")
    assert path == tmp_path / "boxes.csv"
    images = read_predictions(path)
    assert [im["index"] for im in images] == [0, 1, 2, 3, 4]
    assert all(len(im["boxes"]) == len(im["scores"]) == len(im["labels"]) <= 3 for im in images)
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(len(im["boxes"]) for im in images) > 0
    first = next(im for im in images if im["boxes"])
    row = next(r for r in rows if int(r["index"]) == first["index"])
    assert [float(row[k]) for k in ("x1", "y1", "x2", "y2")] == pytest.approx(
        first["boxes"][0], rel=1e-5
    )
    assert int(row["label"]) == first["labels"][0]


def test_torchok_detr_config_checks_unchanged(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    _torchok_env(monkeypatch, tmp_path)
    assert check(okc.load_experiment(SPEC / "detr_resnet50_coco.yaml")) == []


# --- TorchOk's FCOS config ---------------------------------------------------------------------------

# Components of issue 12 (callbacks FreezeUnfreeze, FinalizeLogger; logger MLFlowLoggerX). The
# test strips only those okc does not know yet, so it tightens by itself once they land.
ISSUE_12 = {"FreezeUnfreeze", "FinalizeLogger", "MLFlowLoggerX"}


def _torchok_env(monkeypatch: pytest.MonkeyPatch, home: Path | None = None) -> None:
    # MLFlowLoggerX exists now: a run writes its database and artifacts, so keep them in ``home``
    store = home if home is not None else Path("/tmp")
    monkeypatch.setenv("DB_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.setenv("S3_ARTIFACT_BUCKET", f"file://{store / 'okc-artifacts'}")
    if home is not None:
        monkeypatch.setenv("HOME", str(home))


def _without_issue_12(exp: okc.Experiment) -> okc.Experiment:
    """``exp`` minus the issue-12 components okc's check reports as unknown, and only those."""
    errors = check(exp)
    unknown = {e.path for e in errors if "unknown" in e.message}
    callbacks = [
        c for i, c in enumerate(exp.callbacks)
        if not (c.name in ISSUE_12 and f"callbacks.{i}.name" in unknown)
    ]  # fmt: skip
    logger = exp.logger
    if logger is not None and logger.name in ISSUE_12 and "logger.name" in unknown:
        logger = None
    return attrs.evolve(exp, callbacks=callbacks, logger=logger)


def test_torchok_fcos_config_checks_unchanged(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    _torchok_env(monkeypatch, tmp_path)
    exp = okc.load_experiment(SPEC / "fcos_resnet50_coco.yaml")
    others = [
        e for e in check(exp)
        if not any(f"'{name}'" in e.message for name in ISSUE_12)
    ]  # fmt: skip
    assert others == []
    assert check(_without_issue_12(exp)) == []


def _coco_fixture(folder: Path) -> None:
    """A COCO-format folder: train2017 with one JPEG (a car: category id 3, not contiguous),
    val2017 with two (a person, and one without objects) and instances_*.json."""
    root = folder / "COCO"
    (root / "annotations").mkdir(parents=True)
    categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    for split, count, category in (("train2017", 1, 3), ("val2017", 2, 1)):
        (root / split).mkdir()
        images, annotations = [], []
        for i in range(count):
            name = f"{i:012d}.jpg"
            pixels = Image.new("RGB", (96, 64), (20 * i, 120, 200))
            buffer = io.BytesIO()
            pixels.save(buffer, format="JPEG")
            (root / split / name).write_bytes(buffer.getvalue())
            images.append({"id": i, "file_name": name, "width": 96, "height": 64})
            if i == 0:  # the other images have no objects
                annotations.append({"id": len(annotations) + 1, "image_id": i, "iscrowd": 0,
                                    "category_id": category, "bbox": [10, 8, 40, 30]})  # fmt: skip
        data = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


@pytest.mark.slow
def test_torchok_fcos_config_trains_on_a_tiny_coco(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """resnet50 at 400x672, as the config says: only data, weights, device, precision and the
    number of steps are overridden."""
    _torchok_env(monkeypatch, tmp_path)
    data = tmp_path / "coco"
    _coco_fixture(data)
    overrides = [
        f"data.TRAIN.0.dataset.params.data_folder={data}",
        f"data.VALID.0.dataset.params.data_folder={data}",
        "task.params.backbone_params.pretrained=false",
        "trainer.accelerator=cpu",
        "trainer.precision=32",
        "trainer.max_steps=2",
        "trainer.num_sanity_val_steps=0",
    ]
    exp = _without_issue_12(okc.load_experiment(SPEC / "fcos_resnet50_coco.yaml", overrides))
    result = okc.fit(exp)
    assert result.global_step == 2
    records = _jsonl(result.run_dir)
    # one train image, batch size 8: each step is an epoch, which logs its mean loss
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    valid = next(r for r in records if "valid/MMDetMAP_50" in r)
    assert {"valid/MMDetMAP_75", "valid/CEMAP_map", "valid/CEMAP_map_small"} <= set(valid)
    assert result.best_checkpoint is not None  # ModelCheckpoint monitored valid/MMDetMAP_50


@pytest.mark.slow
@pytest.mark.compile
def test_the_compiled_step_matches_eager(tmp_path: Path) -> None:
    """Assignment and NMS stay out of the graph (data-dependent shapes); the rest compiles, and
    batches with different box counts (none included) give eager's losses."""
    from okc.engine.step import TrainingModule

    exp = tiny(tmp_path)
    task = build_task(exp).train()
    step = TrainingModule(task, build_joint_loss(exp.joint_loss))
    compiled = torch.compile(step, backend="aot_eager")
    for count in (1, 2, 0):
        batch = {"image": torch.rand(2, 3, 32, 32),
                 "bboxes": [torch.tensor([[2.0, 2.0, 20.0, 24.0]] * count).reshape(-1, 4)] * 2,
                 "label": [torch.ones(count, dtype=torch.long)] * 2}  # fmt: skip
        total, parts, _ = compiled(batch)
        expected, expected_parts, _ = step(batch)
        torch.testing.assert_close(total, expected)
        assert parts.keys() == expected_parts.keys()


def test_okc_export_writes_the_network_before_nms(tmp_path: Path) -> None:
    """``okc export`` of a detection experiment: ONNX and TorchScript of ``forward`` (boxes and
    scores of every prior), each within okc's tolerance of PyTorch (it warns otherwise)."""
    import warnings

    from okc.exports.onnx import OnnxModel
    from okc.exports.torchscript import load_torchscript

    exp = tiny(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = export(exp, output=tmp_path / "det", fmt="all")
    assert sorted(p.suffix for p in written) == [".onnx", ".pt"]
    assert not [w for w in caught if "differs from PyTorch" in str(w.message)]
    x = torch.rand(3, 3, 32, 32)
    onnx_out = OnnxModel(tmp_path / "det.onnx")(x)
    script_out = load_torchscript(tmp_path / "det.pt")(x)
    # (B, N, 4 + C + 1): every location of the two levels (strides 16 and 32: 2x2 and 1x1)
    assert onnx_out.shape == script_out.shape == (3, 5, 4 + 3 + 1)
    assert torch.isfinite(onnx_out).all()
    torch.testing.assert_close(onnx_out, script_out, atol=1e-4, rtol=1e-4)
