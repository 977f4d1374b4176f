"""MultiHeadClassificationTask and its datasets: TorchOk's params, condition masks that keep a
head's loss and metrics to its rows, the neck in use, named ONNX outputs with parity, CSV targets
with errors that name file line and column, and a tiny experiment that fits end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from datafiles import write_image

import okc
from okc.api import check as check_experiment
from okc.api import export as export_experiment
from okc.api import fit
from okc.config.bind import make
from okc.data.datasets import MultiHeadImageDataset, MultiHeadShapes
from okc.errors import ConfigErrors, OkcError, at, under
from okc.registry import DATASETS
from okc.tasks import MultiHeadClassificationTask
from okc.tasks.onnx import OnnxModel

REPO = Path(__file__).resolve().parents[1]
HEADS = [
    {"type": "ClassificationHead", "name": "shape", "target": "shape", "params": {"num_classes": 4}},
    {"type": "ClassificationHead", "name": "colour", "target": "colour",
     "params": {"num_classes": 3}},
]  # fmt: skip
BODY = {"backbone_name": "test_resnet", "pooling_name": "Pooling",
        "inputs": [{"shape": [3, 16, 16], "dtype": "float32"}]}  # fmt: skip


def multihead(**params: object) -> MultiHeadClassificationTask:
    torch.manual_seed(0)
    return MultiHeadClassificationTask(**{**BODY, "heads": HEADS, **params}).eval()  # type: ignore[arg-type]


# --- the task ---------------------------------------------------------------------------------------


def test_condition_keeps_a_heads_outputs_loss_and_metrics_to_its_rows() -> None:
    task = multihead()
    images = torch.randn(5, 3, 16, 16)
    keep = torch.tensor([True, False, True, False, True])
    batch = {"image": images, "target_shape": torch.tensor([0, 1, 2, 3, 0]),
             "target_colour": torch.tensor([2, 0, 1, 0, 2]), "condition_colour": keep}  # fmt: skip
    with torch.no_grad():
        out = task.forward_with_gt(batch)
        shape_logits, colour_logits = task(images)
    assert (
        set(out)
        == set(task.output_keys)
        == {"embeddings", "prediction_shape", "prediction_colour", "target_shape", "target_colour"}
    )
    assert out["embeddings"].shape[0] == 5 and out["prediction_shape"].shape == (5, 4)
    torch.testing.assert_close(out["prediction_shape"], shape_logits)
    # the colour head sees the three rows its condition keeps, and their targets only
    torch.testing.assert_close(out["prediction_colour"], colour_logits[keep])
    assert out["target_colour"].tolist() == [2, 1, 2]
    # so a loss over the head's outputs ignores the dropped rows, whatever their targets say
    loss = torch.nn.functional.cross_entropy
    changed = {**batch, "target_colour": torch.tensor([2, 1, 1, 2, 2])}
    with torch.no_grad():
        other = task.forward_with_gt(changed)
    assert loss(out["prediction_colour"], out["target_colour"]) == loss(
        other["prediction_colour"], other["target_colour"]
    )
    with torch.no_grad():  # a 0/1 condition selects the same rows as a boolean one
        as_ints = task.forward_with_gt({**batch, "condition_colour": keep.long()})
    torch.testing.assert_close(as_ints["prediction_colour"], out["prediction_colour"])
    predicted = task.predict_outputs(out)
    assert predicted["prediction_shape"].tolist() == shape_logits.argmax(1).tolist()


def test_the_neck_is_used() -> None:
    """TorchOk built the neck and skipped it in forward; okc runs backbone → neck → pooling."""
    task = multihead(neck_name="FPN", neck_params={"out_channels": 8})
    assert "neck" in {n.split(".")[0] for n, _ in task.model.named_parameters()}
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = task(x)[0]
        for p in task.model.neck.parameters():
            p.add_(0.5)
        after = task(x)[0]
    assert not torch.allclose(before, after)


@pytest.mark.slow  # the torch.export-based ONNX exporter takes ~10 s
def test_checkpoint_keys_and_export_with_one_named_output_per_head(tmp_path: Path) -> None:
    from okc.exports.onnx import export_verified_onnx

    task = multihead()
    assert {"heads.shape.fc.weight", "heads.colour.fc.weight"} <= set(task.model.state_dict())
    assert task.output_names == ("shape", "colour")
    path = export_verified_onnx(task, task.example_inputs(2), tmp_path / "m.onnx",
                                output_names=task.output_names)  # fmt: skip
    onnx = OnnxModel(path)
    assert onnx.output_names == ["shape", "colour"]
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = task(x)
    for got, want in zip(onnx(x), expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("heads", "expected"),
    [
        ([{**HEADS[0], "type": "ClassificatonHead"}],
         r"task.params.heads.0.type: .*did you mean 'ClassificationHead'"),
        ([{**HEADS[0], "parms": {}}], r"task.params.heads.0.parms: unknown key, did you mean 'params'"),
        ([{"type": "ClassificationHead", "name": "a"}],
         r"task.params.heads.0.target: required key is missing"),
        ([HEADS[0], HEADS[0]], r"task.params.heads.1.name: head name 'shape' is repeated"),
        ([{**HEADS[0], "params": {"num_classes": 4, "in_channels": 8}}],
         r"task.params.heads.0.params.in_channels: okc sets 'in_channels'"),
        ([{**HEADS[0], "params": {"num_clases": 4}}],
         r"task.params.heads.0.params.num_clases: .*did you mean 'num_classes'"),
        ("shape", r"task.params.heads: expected list of mapping, got 'shape'"),
        ([], r"task.params.heads: expected a non-empty list of heads"),
    ],
)  # fmt: skip
def test_bad_heads_are_config_errors_with_key_paths(heads: object, expected: str) -> None:
    params = {**BODY, "heads": heads}
    errors = under("task.params", MultiHeadClassificationTask.param_problems(params))
    messages = "\n".join(map(str, errors))
    assert re.search(expected, messages), messages
    with pytest.raises(ConfigErrors, match=expected), at("task.params"):
        MultiHeadClassificationTask(**params)  # type: ignore[arg-type]


def test_a_vector_head_without_pooling_is_refused() -> None:
    params = {"backbone_name": "test_resnet", "heads": HEADS}
    errors = MultiHeadClassificationTask.param_problems(params)
    assert any(e.path == "heads.0.type" and "pooled embedding" in e.message
               for e in errors), errors  # fmt: skip


# --- datasets ---------------------------------------------------------------------------------------


def write_csv(folder: Path, text: str, name: str = "annotations.csv") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        write_image(folder / f"{i}.png", (10 * i, 20, 30))
    (folder / name).write_text(text)


TARGETS = [
    {"name": "kind", "column": "kind", "type": "multiclass", "num_classes": 3},
    {"name": "tags", "column": "tags", "type": "multilabel", "num_classes": 4},
    {"name": "vec", "column": "vec", "type": "embedding"},
]


def test_csv_targets_of_each_type_and_empty_cells_as_conditions(tmp_path: Path) -> None:
    write_csv(tmp_path, "image_path,kind,tags,vec\n0.png,2,0 3,0.5 1\n1.png,,,\n2.png,0,1,2 -1\n")
    dataset = MultiHeadImageDataset(data_folder=str(tmp_path), annotation_path="annotations.csv",
                                    targets=TARGETS)  # fmt: skip
    first, second = dataset[0], dataset[1]
    assert first["image"].dtype == torch.uint8 and first["image"].shape[0] == 3
    assert first["target_kind"].dtype == torch.int64 and first["target_kind"] == 2
    assert first["target_tags"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert first["target_vec"].tolist() == [0.5, 1.0] and first["target_vec"].dtype == torch.float32
    # an empty class or vector cell: no such target for that image; an empty multilabel: no labels
    assert [dataset[i]["condition_kind"].item() for i in range(3)] == [True, False, True]
    assert [dataset[i]["condition_vec"].item() for i in range(3)] == [True, False, True]
    assert "condition_tags" not in second and second["target_tags"].sum() == 0
    assert set(
        MultiHeadImageDataset(
            data_folder=str(tmp_path),
            annotation_path="annotations.csv",
            targets=TARGETS,
            test_mode=True,
        )[0]
    ) == {"image", "index"}


def test_embeddings_from_a_csv_matched_by_image_path(tmp_path: Path) -> None:
    write_csv(tmp_path, "image_path,kind\n0.png,1\n1.png,2\n2.png,0\n")
    (tmp_path / "emb.csv").write_text("image_path,e0,e1,e2\n2.png,1,2,3\n0.png,4,5,6\n")
    target = {"name": "vec", "column": "vec", "type": "embedding", "path_to_embeddings": "emb.csv"}
    dataset = MultiHeadImageDataset(data_folder=str(tmp_path), annotation_path="annotations.csv",
                                    targets=[target])  # fmt: skip
    assert dataset[0]["target_vec"].tolist() == [4, 5, 6] and dataset[2]["target_vec"].tolist() == [
        1,
        2,
        3,
    ]
    assert [dataset[i]["condition_vec"].item() for i in range(3)] == [True, False, True]
    (tmp_path / "emb.npy").write_bytes(b"")
    with pytest.raises(OkcError, match="emb.npy: okc reads embeddings from a CSV"):
        MultiHeadImageDataset(data_folder=str(tmp_path), annotation_path="annotations.csv",
                              targets=[{**target, "path_to_embeddings": "emb.npy"}])  # fmt: skip


@pytest.mark.parametrize(
    ("text", "targets", "expected"),
    [
        ("image_path,kind\n0.png,7\n", TARGETS[:1],
         r"annotations.csv line 2 \(row 0\): column 'kind': class 7 is not in 0..2"),
        ("image_path,kind\n0.png,1\n1.png,x\n", TARGETS[:1],
         r"annotations.csv line 3 \(row 1\): column 'kind': 'x' is not a class id"),
        ("image_path,vec\n0.png,1 2\n1.png,1 2 3\n", TARGETS[2:],
         r"line 3 \(row 1\): column 'vec': not 2 numbers"),
        ("image_path,kind\n0.png,1\n", [{**TARGETS[0], "column": "knd"}],
         r"has no column 'knd', did you mean 'kind'"),
    ],
)  # fmt: skip
def test_bad_cells_name_the_file_line_and_column(
    tmp_path: Path, text: str, targets: list, expected: str
) -> None:
    write_csv(tmp_path, text)
    with pytest.raises(OkcError, match=expected):
        MultiHeadImageDataset(data_folder=str(tmp_path), annotation_path="annotations.csv",
                              targets=targets)  # fmt: skip


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        ([{**TARGETS[0], "type": "multiclas"}], r"params.targets.0"),
        ([{"name": "kind", "type": "multiclass", "num_classes": 3}], r"params.targets.0"),
        ([{**TARGETS[0], "num_classes": None}], r"params.targets.0.num_classes: a multiclass"),
        ([TARGETS[0], TARGETS[0]], r"params.targets.1.name: target name 'kind' is repeated"),
    ],
)  # fmt: skip
def test_bad_targets_are_config_errors_at_their_key(
    tmp_path: Path, targets: list, expected: str
) -> None:
    write_csv(tmp_path, "image_path,kind\n0.png,1\n")
    params = {
        "data_folder": str(tmp_path),
        "annotation_path": "annotations.csv",
        "targets": targets,
    }
    with pytest.raises(OkcError, match=expected):
        make(DATASETS, "MultiHeadImageDataset", params)


def test_multihead_shapes_colour_is_the_shapes_dominant_channel() -> None:
    dataset = MultiHeadShapes(num_samples=60, image_size=24, num_classes=4, split="valid")
    clear = 0
    for i in range(60):
        sample = dataset[i]
        image, kinds, instances = dataset.render(i)
        assert torch.equal(sample["image"], image) and sample["target_shape"] == kinds[0]
        colour = image[:, instances == 1].float().mean(1)
        assert sample["target_colour"] == colour.argmax()
        clear += int(sample["condition_colour"])
    assert 15 < clear < 55  # some shapes have no clear colour, most do


# --- experiments ------------------------------------------------------------------------------------


def shapes_multihead(tmp_path: Path, *overrides: str) -> okc.Experiment:
    return okc.load_experiment(
        REPO / "experiments" / "shapes_multihead.yml",
        [f"logger.log_dir={tmp_path}", "trainer.enable_progress_bar=false",
         "task.params.backbone_name=test_resnet", *overrides],
    )  # fmt: skip


@pytest.mark.slow
def test_shapes_multihead_fits_both_heads_and_exports(tmp_path: Path) -> None:
    """A few steps of the shipped experiment on small data: both heads' losses and metrics are
    logged, and the export has both heads as named outputs that match PyTorch."""
    exp = shapes_multihead(
        tmp_path, "trainer.max_epochs=1", "data.TRAIN.0.dataset.params.num_samples=256",
        "data.VALID.0.dataset.params.num_samples=100",
        "optimization.0.scheduler.params.steps_per_epoch=4",
    )  # fmt: skip
    assert check_experiment(exp) == []
    result = fit(exp)
    logged = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*logged)
    assert {"train/shape_ce", "train/colour_ce", "valid/shape_accuracy",
            "valid/colour_accuracy"} <= keys  # fmt: skip
    (path,) = export_experiment(exp, checkpoint=result.best_checkpoint, fmt="onnx")
    assert OnnxModel(path).output_names == ["shape", "colour"]


TORCHOK_MULTIHEAD = """
task:
  name: MultiHeadClassificationTask
  params:
    backbone_name: resnet18
    backbone_params: {pretrained: false, in_channels: 3}
    pooling_name: Pooling
    heads:
      - {type: ClassificationHead, name: kind_head, target: kind, params: {num_classes: 3}}
      - {type: ClassificationHead, name: tags_head, target: tags, params: {num_classes: 4}}
    inputs: [{shape: [3, 64, 64], dtype: float32}]
joint_loss:
  losses:
    - {name: CrossEntropyLoss, mapping: {input: prediction_kind_head, target: target_kind}}
    - {name: BCEWithLogitsLoss, mapping: {input: prediction_tags_head, target: target_tags}}
optimization:
  - optimizer: {name: Adam, params: {lr: 0.001}}
data:
  TRAIN:
    - dataloader: {batch_size: 2, num_workers: 0, shuffle: true, drop_last: true}
      dataset:
        name: MultiHeadImageDataset
        params:
          data_folder: DATA
          annotation_path: annotations.csv
          lazy_init: true
          targets:
            - {name: kind, column: kind, type: multiclass, num_classes: 3}
            - {name: tags, column: tags, type: multilabel, num_classes: 4, dtype: float32}
        transform:
          - {name: Resize, params: {height: 64, width: 64}}
          - {name: Normalize}
          - {name: ToTensorV2}
metrics:
  - name: Accuracy
    params: {task: multiclass, num_classes: 3}
    mapping: {preds: prediction_kind_head, target: target_kind}
trainer: {max_epochs: 1}
"""


def test_a_torchok_format_multihead_config_checks(tmp_path: Path) -> None:
    write_csv(tmp_path / "data", "image_path,kind,tags\n0.png,1,0 2\n1.png,2,\n2.png,0,3\n")
    data = yaml.safe_load(TORCHOK_MULTIHEAD.replace("DATA", str(tmp_path / "data")))
    assert check_experiment(_from_data(data)) == []
    bad = yaml.safe_load(TORCHOK_MULTIHEAD.replace("DATA", str(tmp_path / "data")))
    bad["joint_loss"]["losses"][0]["mapping"]["input"] = "prediction_kind"
    errors = check_experiment(_from_data(bad))
    assert [e.path for e in errors] == ["joint_loss.losses.0.mapping.input"]
    assert "prediction_kind_head" in errors[0].message


def _from_data(data: dict) -> okc.Experiment:
    from okc.config.load import experiment_from_data

    return experiment_from_data(data, (), name="torchok_multihead")
