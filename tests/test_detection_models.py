"""Detection models: the mmdet-style FPN, FCOS/RetinaNet heads (priors, assignment, box coding,
post-processing), config errors, and ONNX export of the network before NMS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torchvision.ops import box_iou

from okc.errors import ConfigError, ConfigErrors, ParamError
from okc.exports.onnx import OnnxModel, export_onnx
from okc.models.detection import FPN, FCOSHead, RetinaNetHead, build_detection_model
from okc.models.detection.assign import IGNORED, NEGATIVE, fcos_assign, max_iou_assign
from okc.models.detection.configs import AssignerCfg, NmsCfg, TestCfg
from okc.models.detection.fcos import centerness_target, distance_to_box, grid_points

FCOS = {
    "backbone_name": "test_resnet",
    "num_scales": 3,
    "neck_name": "FPN",
    "neck_params": {"out_channels": 16, "num_outs": 4, "add_extra_convs": "on_output"},
    "head_name": "FCOSHead",
    "head_params": {"num_classes": 3, "feat_channels": 16, "stacked_convs": 1,
                    "norm_cfg": {"type": "GN", "num_groups": 4}},
}  # fmt: skip
RETINA = {
    **FCOS,
    "head_name": "RetinaNetHead",
    "head_params": {"num_classes": 3, "feat_channels": 16, "stacked_convs": 1},
}


# --- FPN ------------------------------------------------------------------------------------------


def _maps(channels: list[int], sizes: list[int]) -> list[torch.Tensor]:
    return [torch.rand(2, c, s, s) for c, s in zip(channels, sizes, strict=True)]


@pytest.mark.parametrize("extra", [False, True, "on_input", "on_lateral", "on_output"])
def test_fpn_levels_channels_and_strides(extra: bool | str) -> None:
    fpn = FPN(in_channels=[8, 16, 32, 64], in_strides=[4, 8, 16, 32], out_channels=12,
              num_outs=5, start_level=1, add_extra_convs=extra)  # fmt: skip
    outs = fpn(_maps([8, 16, 32, 64], [32, 16, 8, 4]))
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2, 1]
    assert all(o.shape[1] == 12 for o in outs)
    assert fpn.out_strides == [8, 16, 32, 64, 128]
    # extra levels: convs (trained) unless add_extra_convs is false (max pooling)
    assert len(fpn.fpn_convs) == (3 if extra is False else 5)


def test_fpn_extra_conv_sources() -> None:
    """on_input convolves the backbone's last map (its channels), the others FPN maps."""
    fpn = FPN(in_channels=[8, 16], in_strides=[8, 16], out_channels=4, num_outs=3,
              add_extra_convs="on_input")  # fmt: skip
    assert fpn.fpn_convs[2].conv.in_channels == 16
    fpn = FPN(in_channels=[8, 16], in_strides=[8, 16], out_channels=4, num_outs=4,
              add_extra_convs="on_output", relu_before_extra_convs=True)  # fmt: skip
    assert fpn.fpn_convs[2].conv.in_channels == 4 and len(fpn(_maps([8, 16], [8, 4]))) == 4


def test_fpn_end_level_and_norm() -> None:
    fpn = FPN(in_channels=[8, 16, 32], in_strides=[8, 16, 32], out_channels=8, num_outs=2,
              end_level=1, norm_cfg={"type": "BN"}, act_cfg={"type": "ReLU"})  # fmt: skip
    outs = fpn(_maps([8, 16, 32], [8, 4, 2]))
    assert [o.shape[-1] for o in outs] == [8, 4] and fpn.out_strides == [8, 16]
    assert isinstance(fpn.fpn_convs[0][1], torch.nn.BatchNorm2d)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"add_extra_convs": "on_top"}, "add_extra_convs"),
        ({"num_outs": 1}, "num_outs"),
        ({"start_level": 5}, "start_level"),
        ({"norm_cfg": {"type": "SyncBN"}}, "norm_cfg.type"),
        ({"upsample_cfg": {"mode": "nearest", "scale": 2}}, "upsample_cfg"),
    ],
)
def test_fpn_bad_params_name_the_key(params: dict[str, Any], key: str) -> None:
    with pytest.raises((ParamError, ConfigErrors)) as err:  # a rule on the inputs, or binding's
        FPN(**{"in_channels": [8, 16], "in_strides": [8, 16], "num_outs": 2, **params})
    bad = err.value
    assert (bad.key if isinstance(bad, ParamError) else bad.errors[0].path).startswith(key)


# --- priors, coding, assignment ------------------------------------------------------------------


def test_fcos_points_and_distance_round_trip() -> None:
    points = grid_points(2, 3, 8, like=torch.zeros(1))
    assert points.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    box = torch.tensor([[2.0, 1.0, 30.0, 15.0]])
    distances = torch.cat([points - box[:, :2], box[:, 2:] - points], dim=-1)
    torch.testing.assert_close(distance_to_box(points, distances), box.expand(6, 4))
    # centerness: sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)) at (12, 4): l 10 r 18, t 3 b 11
    expected = ((10 / 18) * (3 / 11)) ** 0.5
    assert centerness_target(distances[1:2]).item() == pytest.approx(expected)


def test_retinanet_anchors_and_box_coder_round_trip() -> None:
    head = RetinaNetHead(num_classes=2, in_channels=8, in_strides=[8, 16], stacked_convs=0,
                         anchor_generator={"scales": [4.0], "ratios": [1.0]})  # fmt: skip
    raw = head([torch.rand(1, 8, 2, 2), torch.rand(1, 8, 1, 1)])
    anchors = head.anchors(raw)
    # one 32x32 anchor per cell of the stride-8 level, centred on the cell corners (offset 0)
    assert anchors[:4].tolist() == [
        [-16, -16, 16, 16],
        [-8, -16, 24, 16],
        [-16, -8, 16, 24],
        [-8, -8, 24, 24],
    ]
    assert anchors[4].tolist() == [-32, -32, 32, 32]
    gt = torch.tensor([[3.0, 5.0, 40.0, 27.0]]).expand(5, 4)
    deltas = head.coder.encode_single(gt, anchors)
    torch.testing.assert_close(head.coder.decode_single(deltas, anchors), gt)


def test_max_iou_assigner_thresholds_and_low_quality_matches() -> None:
    priors = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 6], [0, 0, 10, 4.5], [20, 20, 30, 30.0],
                           [50, 50, 60, 60]])  # fmt: skip
    gt = torch.tensor([[0, 0, 10, 10], [21, 21, 40, 40.0]])
    cfg = AssignerCfg(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)
    iou = box_iou(gt, priors)
    assert iou[0, 1] == pytest.approx(0.6) and iou[0, 2] == pytest.approx(0.45)
    matched = max_iou_assign(priors, gt, cfg)
    # IoU 1 and 0.6: positives; 0.45: ignored (between the thresholds); the last: background;
    # prior 3 has IoU 0.2 with box 1 only, but it is box 1's best prior: a low-quality match
    assert matched.tolist() == [0, 0, IGNORED, 1, NEGATIVE]
    strict = AssignerCfg(pos_iou_thr=0.5, neg_iou_thr=0.4, match_low_quality=False)
    assert max_iou_assign(priors, gt, strict).tolist()[3] == NEGATIVE
    assert (max_iou_assign(priors, gt[:0], cfg) == NEGATIVE).all()


def test_fcos_assignment_by_range_and_centre() -> None:
    points = torch.tensor([[4.0, 4.0], [12.0, 12.0], [36.0, 36.0]])
    strides = torch.tensor([8.0, 8.0, 8.0])
    ranges = torch.tensor([[-1.0, 64.0]] * 3)
    boxes = torch.tensor([[0, 0, 40, 40.0], [8, 8, 16, 16.0]])
    # the point in both boxes learns the smaller; the corner point only the big one
    assert fcos_assign(points, strides, ranges, boxes, center_sampling=False,
                       radius=1.5).tolist() == [0, 1, 0]  # fmt: skip
    # centre sampling (radius 1.5 strides = 12 px): the big box's centre region is 8..32
    assert fcos_assign(points, strides, ranges, boxes, center_sampling=True,
                       radius=1.5).tolist() == [NEGATIVE, 1, NEGATIVE]  # fmt: skip
    small_range = torch.tensor([[-1.0, 10.0]] * 3)
    assert fcos_assign(points, strides, small_range, boxes, center_sampling=False,
                       radius=1.5).tolist() == [NEGATIVE, 1, NEGATIVE]  # fmt: skip


def test_fcos_max_iou_assigner_uses_square_priors() -> None:
    def labels(**train: Any) -> list[list[int]]:
        head = FCOSHead(num_classes=2, in_channels=8, in_strides=[8], stacked_convs=0,
                        norm_cfg=None, prior_scale=2.0,
                        train_cfg={"assigner": {"type": "MaxIoUAssigner"}, **train})  # fmt: skip
        raw = head([torch.zeros(1, 8, 4, 4)])
        box = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
        inputs = head.loss_inputs(raw, [box], [torch.tensor([1])], (32, 32))
        return inputs["flatten_labels"].reshape(4, 4).tolist()

    # 16 px priors centred at 4, 12, 20, 28: the four around the box overlap it with IoU
    # 144 / 368 = 0.39, under neg_iou_thr 0.4, but they are the box's best: low-quality matches
    assert labels() == [[1, 1, 2, 2], [1, 1, 2, 2], [2, 2, 2, 2], [2, 2, 2, 2]]
    # an image without boxes: background everywhere
    head = FCOSHead(num_classes=2, in_channels=8, in_strides=[8], stacked_convs=0, norm_cfg=None,
                    train_cfg={"assigner": {"type": "MaxIoUAssigner"}})  # fmt: skip
    raw = head([torch.zeros(1, 8, 4, 4)])
    empty = head.loss_inputs(raw, [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)], (32, 32))
    assert (empty["flatten_labels"] == 2).all()
    # allowed_border 0: priors reaching out of the 32x32 image (the outer ring) are ignored
    assert labels(allowed_border=0) == [[-1, -1, -1, -1], [-1, 1, 2, -1], [-1, 2, 2, -1],
                                        [-1, -1, -1, -1]]  # fmt: skip


# --- post-processing -------------------------------------------------------------------------------


def test_detections_threshold_nms_and_max_per_image() -> None:
    head = RetinaNetHead(num_classes=2, in_channels=4, in_strides=[8], stacked_convs=0,
                         test_cfg={"score_thr": 0.3, "nms": {"iou_threshold": 0.5},
                                   "max_per_img": 2})  # fmt: skip
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60],
                          [0, 0, 1, 1.0]])  # fmt: skip
    scores = torch.tensor([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.2, 0.6], [0.1, 0.1]])
    dense = torch.cat([boxes, scores], dim=1)[None]
    (det,) = head.detections(dense, [5])
    # box 1 is suppressed by box 0 (same class, IoU 0.82); box 2 is another class; box 3's
    # class-0 score is under the threshold; the best two are kept
    assert det["scores"].tolist() == pytest.approx([0.9, 0.7])
    assert det["labels"].tolist() == [0, 1]
    head.test_cfg = TestCfg(score_thr=0.3, nms=NmsCfg(class_agnostic=True), max_per_img=10)
    (det,) = head.detections(dense, [5])
    assert det["scores"].tolist() == pytest.approx([0.9, 0.6])  # one box per place, any class


def test_fcos_scores_are_multiplied_by_centerness_after_the_threshold() -> None:
    head = FCOSHead(num_classes=1, in_channels=4, in_strides=[8], stacked_convs=0, norm_cfg=None,
                    test_cfg={"score_thr": 0.5})  # fmt: skip
    dense = torch.tensor([[[0, 0, 10, 10, 0.8, 0.5], [20, 20, 30, 30, 0.4, 1.0]]])
    (det,) = head.detections(dense, [2])
    assert det["scores"].tolist() == pytest.approx([0.4])  # 0.8 * 0.5; 0.4 fails the threshold


# --- training inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [FCOS, RETINA], ids=["fcos", "retinanet"])
def test_loss_inputs_with_and_without_boxes(params: dict[str, Any]) -> None:
    torch.manual_seed(0)
    model = build_detection_model(params).train()
    x = torch.rand(2, 3, 64, 64)
    raw = model.raw(x)
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 30.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([2]), torch.zeros(0, dtype=torch.long)]
    inputs = model.head.loss_inputs(raw, boxes, labels, (64, 64))
    assert set(inputs) == set(model.head.loss_keys)
    num = sum(model.head.level_sizes(raw))
    assert inputs["flatten_cls_scores"].shape == (2 * num, 3)
    image_labels = inputs["flatten_labels"].reshape(2, num)
    assert (image_labels[0] == 2).any() and (image_labels[1] == 3).all()  # 3: background
    assert inputs["num_pos"] >= 1
    decoded = inputs["pos_decoded_target_preds"]
    assert decoded.shape[0] == int((inputs["flatten_labels"] == 2).sum())


def test_labels_outside_num_classes_are_named() -> None:
    model = build_detection_model(FCOS).eval()
    raw = model.raw(torch.rand(1, 3, 32, 32))
    with pytest.raises(Exception, match="label 3, but the detection head has num_classes 3"):
        model.head.loss_inputs(raw, [torch.tensor([[0, 0, 8, 8.0]])], [torch.tensor([3])],
                               (32, 32))  # fmt: skip


# --- config errors -------------------------------------------------------------------------------


def test_head_strides_must_match_the_neck() -> None:
    params = {**FCOS, "head_params": {**FCOS["head_params"], "strides": [8, 16, 32, 64, 128]}}
    with pytest.raises(ConfigError, match=r"head_params.strides: .*neck gives maps at strides "
                                          r"\[8, 16, 32, 64\]"):  # fmt: skip
        build_detection_model(params)


@pytest.mark.parametrize(
    ("head_params", "message"),
    [
        ({"test_cfg": {"nms": {"typ": "nms"}}}, r"test_cfg.nms.typ: NmsCfg has no parameter 'typ', "
                                                r"did you mean 'type'"),
        ({"test_cfg": {"nms": {"type": "soft_nms"}}}, r"test_cfg.nms.type: expected one of"),
        ({"train_cfg": {"assigner": {"type": "MaxIoUAssigner", "ignore_iof_thr": 0.5}}},
         r"ignore_iof_thr: needs ground-truth boxes marked 'ignore'"),
        ({"regress_ranges": [[-1, 64]]}, r"regress_ranges: expected one \[low, high\] per level"),
        ({"train_cfg": {"assigner": {}}, "center_sampling": True},
         r"center_sampling: FCOS's location/range assignment is replaced"),
        ({"loss_cls": {"type": "FocalLoss"}}, r"FCOSHead has no parameter 'loss_cls'"),
        ({"norm_cfg": {"type": "GN", "num_groups": 5}}, "do not split into 5 groups"),
    ],
)  # fmt: skip
def test_bad_head_params_name_the_key(head_params: dict[str, Any], message: str) -> None:
    params = {**FCOS, "head_params": {**FCOS["head_params"], **head_params}}
    with pytest.raises((ConfigError, ConfigErrors), match=message):
        build_detection_model(params)


def test_detr_head_without_params_says_what_it_needs() -> None:
    with pytest.raises(ConfigErrors) as info:
        build_detection_model({**FCOS, "head_name": "DETRHead", "head_params": {}})
    messages = [e.message for e in info.value.errors]
    assert "DETRHead needs 'num_classes', which is not set" in messages
    assert "DETRHead needs 'transformer', which is not set" in messages


def test_a_head_needs_equal_channels_per_level() -> None:
    params = {k: v for k, v in FCOS.items() if not k.startswith("neck")}
    with pytest.raises(ConfigError, match="add a neck"):
        build_detection_model(params)


# --- export ----------------------------------------------------------------------------------------


@pytest.mark.slow  # ~10 s each: the exporter, not the model
@pytest.mark.parametrize("params", [FCOS, RETINA], ids=["fcos", "retinanet"])
def test_onnx_export_before_nms_matches_pytorch(params: dict[str, Any], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_detection_model(params).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    path = export_onnx(model, (x,), tmp_path / "det.onnx")
    got = OnnxModel(path)(torch.rand(3, 3, 64, 64))  # another batch size: the batch is dynamic
    assert got.shape == (3, *expected.shape[1:])
    torch.testing.assert_close(OnnxModel(path)(x), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("params", [FCOS, RETINA], ids=["fcos", "retinanet"])
def test_torchscript_trace_without_okc_tracer_warnings(params: dict[str, Any]) -> None:
    import os
    import warnings

    torch.manual_seed(0)
    model = build_detection_model(params).eval()
    x = torch.rand(2, 3, 64, 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, (x,))
    # torch's GroupNorm and torchvision's clip trace with warnings of their own; okc's code none
    assert not [w for w in caught if f"{os.sep}okc{os.sep}" in w.filename]
    torch.testing.assert_close(traced(x), model(x))
