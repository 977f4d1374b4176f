"""SegmentationTask end to end: models (UNet/FPN/HRNet/OCR), outputs, metrics by hand, losses,
training, predicted PNG masks and ONNX export, on tiny timm models and Shapes masks."""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

# by the modules of the same names.
from okc import api
from okc.config.load import experiment_from_data
from okc.config.schema import Metric, Phase
from okc.data import build_pipeline
from okc.data.io import read_mask
from okc.engine.build import build_task
from okc.engine.checkpoint import load_weights, read_checkpoint
from okc.engine.seed import seed_everything
from okc.errors import ConfigErrors, OkcError
from okc.exports.onnx import OnnxModel
from okc.losses.dice import DiceLoss
from okc.metrics import MetricsManager
from okc.tasks import ClassificationTask, SegmentationTask

# A real timm HRNet (hrnet_w18_small's code) shrunk through its cfg kwargs: four branches of
# 4, 8, 16 and 32 channels at strides 4-32, one block each; 65k parameters.
TINY_HRNET = {
    f"stage{i}": {
        "num_modules": 1,
        "num_branches": i,
        "block_type": "BASIC",
        "num_blocks": [1] * i,
        "num_channels": [4 * 2**b for b in range(i)] if i > 1 else [8],
        "fuse_method": "SUM",
    }
    for i in range(1, 5)
}
HRNET = {"backbone_name": "hrnet_w18_small", "backbone_params": TINY_HRNET}
NORMALIZE = {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.25] * 3}}


def shapes(split: str, num: int, **params: Any) -> dict[str, Any]:
    return {
        "name": "Shapes",
        "params": {
            "num_samples": num,
            "image_size": 32,
            "num_classes": 2,
            "split": split,
            "with_mask": True,
            **params,
        },
        "transform": [NORMALIZE],
    }


def seg_experiment(task_params: dict[str, Any], *, num_classes: int = 3) -> dict[str, Any]:
    """A tiny experiment: Shapes masks (background + 2 kinds), CE + Dice, mean IoU."""
    return {
        "task": {
            "name": "SegmentationTask",
            "params": {
                "head_name": "SegmentationHead",
                "head_params": {"num_classes": num_classes},
                "inputs": [{"shape": [3, 32, 32]}],
                **task_params,
            },
        },
        "joint_loss": {
            "losses": [
                {
                    "name": "CrossEntropyLoss",
                    "tag": "ce",
                    "mapping": {"input": "prediction", "target": "target"},
                },
                {
                    "name": "DiceLoss",
                    "tag": "dice",
                    "params": {"mode": "multiclass"},
                    "mapping": {"input": "prediction", "target": "target"},
                },
            ]
        },
        "optimization": [{"optimizer": {"name": "AdamW", "params": {"lr": 0.005}}}],
        "data": {
            "TRAIN": [{"dataset": shapes("train", 64), "dataloader": {"batch_size": 16}}],
            "VALID": [{"dataset": shapes("valid", 32), "dataloader": {"batch_size": 32}}],
        },
        "metrics": [
            {
                "name": "JaccardIndex",
                "params": {"num_classes": num_classes},
                "mapping": {"preds": "prediction", "target": "target"},
                "phases": ["TRAIN", "VALID"],
            },
        ],
        "trainer": {"max_epochs": 1, "enable_progress_bar": False, "num_sanity_val_steps": 0},
        "seed_params": {"seed": 0},
    }


@pytest.fixture
def seg_exp(tiny_exp):
    def make(data: dict[str, Any], *overrides: str):
        return tiny_exp(*overrides, text=yaml.safe_dump(data))

    return make


# --- the task's outputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        {"backbone_name": "test_resnet", "neck_name": "UNet"},
        {"backbone_name": "test_convnext", "neck_name": "FPN"},  # strides 4..32
        {"backbone_name": "test_efficientnet", "neck_name": "UnetNeck"},  # strides 2..32
        {**HRNET, "neck_name": "HRNetSegmentationNeck"},
        {"backbone_name": "dla46_c", "neck_name": "FPN"},  # like HRNet, fails unpadded at 33x47
    ],
)
@pytest.mark.parametrize("num_classes", [3, 1])
def test_outputs_at_input_size_for_any_size(model: dict[str, Any], num_classes: int) -> None:
    task = SegmentationTask(
        **model, head_name="SegmentationHead", head_params={"num_classes": num_classes}
    )
    mask = torch.randint(0, max(num_classes, 2), (2, 33, 47))
    image = torch.randn(2, 3, 33, 47)  # timm's HRNet alone fails on sizes not divisible by 32
    out = task.forward_with_gt({"image": image, "mask": mask})
    shape = (2, num_classes, 33, 47) if num_classes > 1 else (2, 33, 47)  # binary: squeezed
    assert out["prediction"].shape == shape
    assert out["target"] is mask and set(out) == {"prediction", "target"}
    task.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            task(image), task.forward_with_gt({"image": image})["prediction"]
        )


def test_padding_does_not_change_sizes_that_need_none() -> None:
    task = SegmentationTask(
        **HRNET,
        neck_name="HRNetSegmentationNeck",
        head_name="SegmentationHead",
        head_params={"num_classes": 2},
    ).eval()
    image = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        direct = task.model(image)  # no padding needed: the task must not change anything
        torch.testing.assert_close(task(image), direct)
        odd = task(image[..., :63, :31])
    assert task.pad_multiple == 32 and odd.shape == (1, 2, 63, 31)


def test_timm_hrnet_gives_raw_branches_for_segmentation_unless_set() -> None:
    task = SegmentationTask(
        backbone_name="hrnet_w18",
        neck_name="HRNetSegmentationNeck",
        head_name="SegmentationHead",
        head_params={"num_classes": 3},
    )
    assert task.model.backbone.out_channels[1:] == [18, 36, 72, 144]  # as TorchOk's hrnet_w18
    assert task.model.neck.out_channels == 270 and task.model.neck.out_stride == 4
    incre = SegmentationTask(
        **{**HRNET, "backbone_params": {**TINY_HRNET, "feature_location": "incre"}},
        neck_name="HRNetSegmentationNeck",
        head_name="SegmentationHead",
        head_params={"num_classes": 3},
    )
    assert incre.model.neck.out_channels == 128 + 256 + 512 + 1024


def test_hrnet_classification_neck_reuses_timm_increase_modules() -> None:
    def task(backbone_params: dict[str, Any]) -> ClassificationTask:
        return ClassificationTask(
            backbone_name="hrnet_w18_small",
            backbone_params=backbone_params,
            neck_name="HRNetClassificationNeck",
            pooling_name="Pooling",
            head_name="ClassificationHead",
            head_params={"num_classes": 5},
        )

    incre = task(TINY_HRNET)  # timm's default: increased branches 128..1024
    raw = task({**TINY_HRNET, "feature_location": ""})  # 4..32: the neck widens them
    assert all(isinstance(m, nn.Identity) for m in incre.model.neck.incre)
    assert not any(isinstance(m, nn.Identity) for m in raw.model.neck.incre)
    x = torch.randn(2, 3, 64, 64)
    for t in (incre, raw):
        assert t.model.neck.out_channels == 2048 and t(x).shape == (2, 5)
    # every branch reaches the output (TorchOk overwrote the sum and kept only the last one)
    neck = raw.model.neck.eval()
    maps = raw.model.backbone.eval()(x)
    changed = [m.clone() for m in maps]
    changed[1] = changed[1] + 1.0  # the finest branch
    with torch.no_grad():
        assert not torch.allclose(neck(maps), neck(changed))


def test_ocr_head_gives_aux_logits_as_their_own_output() -> None:
    task = SegmentationTask(
        **HRNET,
        neck_name="HRNetSegmentationNeck",
        head_name="OCRSegmentationHead",
        head_params={"num_classes": 4},
    )
    assert task.output_keys == ("prediction", "prediction_aux", "target")
    image, mask = torch.randn(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    out = task.train().forward_with_gt({"image": image, "mask": mask})
    assert out["prediction"].shape == out["prediction_aux"].shape == (2, 4, 32, 32)
    loss = nn.functional.cross_entropy(out["prediction_aux"], mask)
    loss.backward()  # the aux loss trains the aux classifier, not only the main path
    assert task.model.head.aux_head[1].weight.grad.abs().sum() > 0
    task.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            task(image), task.forward_with_gt({"image": image})["prediction"]
        )


def test_head_that_does_not_upsample_is_a_config_error() -> None:
    with pytest.raises(ConfigErrors, match=r"head_params\.do_interpolate: .*input size"):
        SegmentationTask(
            backbone_name="test_resnet",
            neck_name="UNet",
            head_name="SegmentationHead",
            head_params={"num_classes": 2, "do_interpolate": False},
        )


def test_check_knows_which_heads_give_prediction_aux() -> None:
    data = seg_experiment({**HRNET, "neck_name": "HRNetSegmentationNeck"})
    aux_loss = {
        "name": "CrossEntropyLoss",
        "tag": "aux",
        "weight": 0.4,
        "mapping": {"input": "prediction_aux", "target": "target"},
    }
    data["joint_loss"]["losses"] = [
        {**data["joint_loss"]["losses"][0], "weight": 1.0},
        aux_loss,
    ]
    errors = api.check(experiment_from_data(data, ()))
    assert [e.path for e in errors] == ["joint_loss.losses.1.mapping.input"]
    assert "produces no 'prediction_aux'" in errors[0].message
    data["task"]["params"]["head_name"] = "OCRSegmentationHead"
    assert api.check(experiment_from_data(data, ())) == []


# --- metrics and losses against hand computation --------------------------------------------------


def _logits_for(classes: list[list[int]], num_classes: int = 3) -> torch.Tensor:
    """Logits whose argmax is ``classes`` (H, W), as a batch of one."""
    return nn.functional.one_hot(torch.tensor(classes), num_classes).permute(2, 0, 1)[None].float()


def test_mean_iou_and_dice_with_ignore_index_by_hand() -> None:
    preds = _logits_for([[0, 1, 2], [2, 2, 1]])
    target = torch.tensor([[[0, 1, 255], [2, 1, 1]]])
    # Kept (pred, target) pairs: (0,0) (1,1) (2,2) (2,1) (1,1); the ignored pixel predicted 2 is
    # no false positive. Class 0: TP 1. Class 1: TP 2, FN 1. Class 2: TP 1, FP 1.
    iou = [1.0, 2 / 3, 1 / 2]
    dice = [1.0, 2 * 2 / (2 * 2 + 1), 2 * 1 / (2 * 1 + 1)]
    common = {"num_classes": 3, "ignore_index": 255}
    mapping = {"preds": "prediction", "target": "target"}
    manager = MetricsManager(
        [
            Metric(name="JaccardIndex", params=common, mapping=mapping),  # task from num_classes
            Metric(
                name="JaccardIndex",
                tag="IoU",
                mapping=mapping,
                params={**common, "average": "none"},
            ),
            Metric(
                name="F1Score",
                tag="Dice",
                mapping=mapping,
                params={**common, "average": "none", "multidim_average": "global"},
            ),
            Metric(
                name="F1Score",
                tag="mDice",
                mapping=mapping,
                params={**common, "average": "macro", "multidim_average": "global"},
            ),
        ]
    )
    # Two batches of the same pair: accumulation must not change the ratios.
    for _ in range(2):
        manager.update(Phase.VALID, {"prediction": preds, "target": target})
    got = {k: v.item() for k, v in manager.on_epoch_end(Phase.VALID).items()}
    assert got["valid/JaccardIndex"] == pytest.approx(sum(iou) / 3)
    assert [got[f"valid/IoU_{c}"] for c in range(3)] == pytest.approx(iou)
    assert [got[f"valid/Dice_{c}"] for c in range(3)] == pytest.approx(dice)
    assert got["valid/mDice"] == pytest.approx(sum(dice) / 3)


def test_binary_iou_and_dice_loss_with_ignore_index_by_hand() -> None:
    logits = torch.tensor([[[4.0, -4.0, 4.0], [4.0, -4.0, -4.0]]])  # predicted: 1 0 1 / 1 0 0
    target = torch.tensor([[[1, 0, 255], [0, 0, 1]]])
    # kept pairs (p, t): (1,1) (0,0) (1,0) (0,0) (0,1): TP 1, FP 1, FN 1 → IoU 1/3
    manager = MetricsManager(
        [
            Metric(
                name="JaccardIndex",
                mapping={"preds": "p", "target": "t"},
                params={"task": "binary", "ignore_index": 255},
            )
        ]
    )
    manager.update(Phase.VALID, {"p": logits, "t": target})
    assert manager.on_epoch_end(Phase.VALID)["valid/JaccardIndex"].item() == pytest.approx(1 / 3)
    probs = logits.sigmoid()
    keep = target != 255
    inter, card = (probs * (target == 1))[keep].sum(), probs[keep].sum() + (target == 1).sum()
    loss = DiceLoss(mode="binary", ignore_index=255)(logits, target)
    assert loss.item() == pytest.approx(1 - 2 * inter.item() / card.item(), rel=1e-5)


# --- training, prediction, export -----------------------------------------------------------------


def test_hrnet_ocr_trains_two_steps_with_an_aux_loss(seg_exp) -> None:
    data = seg_experiment(
        {**HRNET, "neck_name": "HRNetSegmentationNeck", "head_name": "OCRSegmentationHead"}
    )
    data["joint_loss"]["losses"] = [
        {
            "name": "CrossEntropyLoss",
            "tag": "ce",
            "weight": 1.0,
            "mapping": {"input": "prediction", "target": "target"},
        },
        {
            "name": "CrossEntropyLoss",
            "tag": "ce_aux",
            "weight": 0.4,
            "mapping": {"input": "prediction_aux", "target": "target"},
        },
    ]
    data["joint_loss"]["normalize_weights"] = False
    exp = seg_exp(data, "trainer.max_steps=2", "trainer.limit_val_batches=1")
    assert api.check(exp) == []
    result = api.fit(exp)
    assert result.global_step == 2
    logged = result.metrics
    for key in ("train/ce", "train/ce_aux", "valid/ce_aux", "valid/JaccardIndex"):
        assert np.isfinite(logged[key]), key
    assert logged["valid/loss"] == pytest.approx(logged["valid/ce"] + 0.4 * logged["valid/ce_aux"])
    seed_everything(0)  # as the run was seeded: its initial weights
    init = build_task(exp).model.state_dict()["head.aux_head.1.weight"]
    trained = read_checkpoint(result.last_checkpoint)["model"]["head.aux_head.1.weight"]
    # two AdamW steps of lr 0.005 move each weight by about 0.01 at most: trained, from this init
    assert 0 < (trained - init).abs().max() < 0.011


def test_binary_segmentation_end_to_end(seg_exp) -> None:
    data = seg_experiment({"backbone_name": "test_resnet", "neck_name": "FPN"}, num_classes=1)
    data["joint_loss"]["losses"] = [
        {"name": "BCEWithLogitsLoss", "mapping": {"input": "prediction", "target": "target"}},
        {
            "name": "DiceLoss",
            "params": {"mode": "binary"},
            "mapping": {"input": "prediction", "target": "target"},
        },
    ]
    data["metrics"][0]["params"] = {"task": "binary"}
    for item in ("TRAIN", "VALID"):  # one shape kind: masks of 0 and 1
        data["data"][item][0]["dataset"]["params"]["num_classes"] = 1
    result = api.fit(seg_exp(data, "trainer.max_steps=3"))
    assert 0.0 <= result.metrics["valid/JaccardIndex"] <= 1.0
    assert np.isfinite(result.metrics["train/loss"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """A UNet trained for one short epoch, and its checkpoint."""
    data = seg_experiment({"backbone_name": "test_resnet", "neck_name": "UNet"})
    data["logger"] = {"log_dir": str(tmp_path_factory.mktemp("logs")), "experiment_name": "seg"}
    data["data"]["PREDICT"] = [
        {"dataset": shapes("test", 21, test_mode=True), "dataloader": {"batch_size": 8}}
    ]
    result = api.fit(experiment_from_data(data, ()))
    return data, result.last_checkpoint


def test_predict_writes_palette_pngs_equal_to_the_argmax(trained, tmp_path: Path) -> None:
    data, checkpoint = trained
    exp = experiment_from_data(data, ())
    out = api.predict(exp, checkpoint=checkpoint, output=tmp_path / "preds.csv")
    rows = list(csv.DictReader(out.open()))
    assert [int(r["index"]) for r in rows] == list(range(21))
    # the argmax computed here, independently of okc predict
    task = build_task(exp).eval()
    load_weights(task.model, checkpoint)
    pipeline = build_pipeline(exp.data.PREDICT[0], phase=Phase.PREDICT)
    expected: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for batch in pipeline:
            batch = pipeline.to_device(batch)
            argmax = task(batch["image"]).argmax(dim=1)
            expected.update(zip(batch["index"].tolist(), argmax, strict=True))
    assert any(m.any() for m in expected.values())  # not all background: the check has teeth
    for row in rows:
        path = out.parent / row["mask_path"]
        with Image.open(path) as image:
            assert image.mode == "P" and image.size == (32, 32)
            assert image.getpalette()[:6] == [0, 0, 0, 128, 0, 0]  # VOC colours: 0 black
        assert torch.equal(read_mask(path), expected[int(row["index"])])


def test_export_of_a_segmentation_model_matches_torch(trained, tmp_path: Path) -> None:
    """``okc export --format all``: ONNX and TorchScript, at an odd size (padding exported)."""
    from okc.exports.torchscript import load_torchscript

    data, checkpoint = trained
    data = {**data, "task": {**data["task"]}}
    data["task"]["params"] = {**data["task"]["params"], "inputs": [{"shape": [3, 33, 47]}]}
    exp = experiment_from_data(data, ())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        onnx_path, script_path = api.export(
            exp, checkpoint=checkpoint, output=tmp_path / "seg", fmt="all"
        )
    assert not [w for w in caught if f"{os.sep}okc{os.sep}" in w.filename]  # no tracer warnings
    task = build_task(exp).eval()
    load_weights(task.model, checkpoint)
    x = torch.randn(3, 3, 33, 47)  # another batch size than the export's
    with torch.no_grad():
        expected = task(x)
        scripted = load_torchscript(script_path)(x)
    got = OnnxModel(onnx_path)(x)
    assert got.shape == scripted.shape == expected.shape == (3, 3, 33, 47)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(scripted, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_mask_values_outside_the_classes_are_reported_with_the_file(tmp_path: Path) -> None:
    from okc.data.datasets.segmentation import ImageSegmentationDataset

    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.array([[0, 1, 7, 255, 2]] * 4, np.uint8)).save(tmp_path / "a_mask.png")
    (tmp_path / "data.csv").write_text("image_path,mask_path\na.png,a_mask.png\n")
    common = {"data_folder": str(tmp_path), "annotation_path": "data.csv"}
    with pytest.raises(
        OkcError,
        match=r"mask .*a_mask.png \(.*data.csv line 2.*\) holds values "
        r"7, 255 where 0..2 are expected",
    ):
        ImageSegmentationDataset(**common, num_classes=3)[0]
    with pytest.raises(OkcError, match=r"holds values 7 where 0..2 or 255 are expected"):
        ImageSegmentationDataset(**common, num_classes=3, ignore_index=255)[0]
    ok = ImageSegmentationDataset(**common, num_classes=8, ignore_index=255)[0]
    assert ok["mask"].tolist()[0] == [0, 1, 7, 255, 2]


SMALL = {"backbone_name": "test_resnet", "neck_name": "FPN", "neck_params": {"out_channels": 16}}


@pytest.mark.compile
@pytest.mark.parametrize("head", ["SegmentationHead", "OCRSegmentationHead"])
def test_forward_with_gt_compiles_in_one_graph(head: str) -> None:
    """aot_eager checks graph capture, padding and cropping included, forward and backward."""
    task = SegmentationTask(**SMALL, head_name=head, head_params={"num_classes": 3}).train()
    batch = {"image": torch.randn(2, 3, 33, 47), "mask": torch.randint(0, 3, (2, 33, 47))}
    compiled = torch.compile(task.forward_with_gt, fullgraph=True, backend="aot_eager")
    out = compiled(batch)
    assert out["prediction"].shape == (2, 3, 33, 47)
    losses = [
        nn.functional.cross_entropy(v, batch["mask"]) for k, v in out.items() if k != "target"
    ]
    sum(losses).backward()


def test_onnx_export_of_an_ocr_head_matches_torch(tmp_path: Path) -> None:
    from okc.exports.onnx import export_onnx

    torch.manual_seed(0)
    task = SegmentationTask(
        **SMALL, head_name="OCRSegmentationHead", head_params={"num_classes": 3}
    ).eval()
    path = export_onnx(task, (torch.randn(2, 3, 40, 40),), tmp_path / "ocr.onnx")
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(OnnxModel(path)(x), task(x), atol=1e-4, rtol=1e-4)
