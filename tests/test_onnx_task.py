"""ONNXTask: the experiment's TEST/PREDICT data and metrics through onnxruntime give the numbers
the PyTorch model gives; wrong inputs, missing providers and placeholders are clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import okc
from okc.config.load import experiment_from_data
from okc.errors import ConfigError


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny model trained for a few steps, its checkpoint and its ONNX export."""
    import yaml
    from conftest import TINY_EXPERIMENT

    root = tmp_path_factory.mktemp("onnx-task")
    data = yaml.safe_load(TINY_EXPERIMENT)
    data["logger"] = {"log_dir": str(root / "logs"), "experiment_name": "tiny"}
    data["data"]["TEST"] = data["data"]["VALID"]
    data["metrics"].append({"name": "F1Score", "params": {"task": "multiclass", "num_classes": 4,
                                                         "average": "macro"},
                            "mapping": {"preds": "prediction", "target": "target"},
                            "phases": ["TEST"]})  # fmt: skip
    exp = experiment_from_data(data, ["trainer.max_epochs=1", "trainer.limit_train_batches=4"])
    result = okc.fit(exp)
    onnx_path, script_path = okc.export(exp, checkpoint=result.last_checkpoint,
                                        output=root / "tiny", fmt="all")  # fmt: skip
    return {"data": data, "exp": exp, "ckpt": result.last_checkpoint, "onnx": onnx_path,
            "script": script_path}  # fmt: skip


def onnx_experiment(trained: dict[str, Any], *overrides: str, **params: Any) -> okc.Experiment:
    data = dict(trained["data"])
    data["task"] = {"name": "ONNXTask", "params": {"path_to_onnx": str(trained["onnx"]), **params}}
    for section in ("joint_loss", "optimization"):
        data.pop(section, None)
    data["metrics"] = [
        {**m, "mapping": {"preds": "output", "target": "target"}} for m in data["metrics"]
    ]
    data["data"] = {**data["data"], "PREDICT": data["data"]["VALID"]}
    return experiment_from_data(data, overrides)


def test_onnx_test_metrics_equal_torch_test_metrics(trained) -> None:
    torch_metrics = okc.test(trained["exp"], checkpoint=trained["ckpt"])
    onnx_metrics = okc.test(onnx_experiment(trained))
    assert set(onnx_metrics) == {"test/Accuracy", "test/F1Score"}  # no loss: nothing to train
    for key, value in onnx_metrics.items():
        assert value == pytest.approx(torch_metrics[key], abs=1e-6), key
    assert 0.0 < torch_metrics["test/Accuracy"] < 1.0  # a real, non-trivial number


def test_torchscript_test_metrics_equal_torch_test_metrics(trained) -> None:
    torch_metrics = okc.test(trained["exp"], checkpoint=trained["ckpt"])
    data = {**onnx_experiment(trained).to_dict(),
            "task": {"name": "TorchScriptTask", "params": {"path_to_model": str(trained["script"])}}}  # fmt: skip
    script_metrics = okc.test(okc.Experiment.from_dict(data))
    assert set(script_metrics) == {"test/Accuracy", "test/F1Score"}
    for key, value in script_metrics.items():
        assert value == pytest.approx(torch_metrics[key], abs=1e-6), key


def test_predict_writes_the_onnx_outputs(trained, tmp_path: Path) -> None:
    path = okc.predict(onnx_experiment(trained), output=tmp_path / "preds.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert header[:2] == ["index", "output_0"] and "output_3" in header
    values = torch.load(path.with_suffix(".pt"), weights_only=True)
    assert values["output"].shape == (128, 4)


def test_keys_mapping_and_providers(trained) -> None:
    with pytest.warns(UserWarning, match="CUDAExecutionProvider not available"):
        metrics = okc.test(onnx_experiment(
            trained, providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
            keys_mapping_onnx2dataset={"input": "image"}))  # fmt: skip
    assert "test/Accuracy" in metrics
    with pytest.raises(ConfigError, match="the ONNX model has no input 'input.1'"):
        okc.test(onnx_experiment(trained, keys_mapping_onnx2dataset={"input.1": "image"}))


def test_a_wrong_input_shape_names_the_expected_shape(trained) -> None:
    exp = onnx_experiment(trained, "data.TEST.0.dataset.params.image_size=24")
    with pytest.raises(ConfigError) as err:
        okc.test(exp)
    assert str(err.value) == (
        "task.params.keys_mapping_onnx2dataset.input: the ONNX model's input 'input' has shape "
        "(batch, 3, 16, 16), batch key 'image' has (64, 3, 24, 24); make the data match (e.g. "
        "Resize in the dataset's transform)"
    )


def test_check_reads_the_outputs_from_the_file(trained) -> None:
    exp = onnx_experiment(trained, "metrics.0.mapping.preds=logits")
    assert [str(e) for e in okc.check(exp)] == [
        "metrics.0.mapping.preds: ONNXTask produces no 'logits'; it produces: output, target"
    ]
    placeholder = onnx_experiment(trained, "task.params.path_to_onnx=<onnx_path>")
    assert next(str(e) for e in okc.check(placeholder)) == (
        "task.params.path_to_onnx: <onnx_path> is a placeholder: set it to your .onnx file (e.g. "
        "one okc export or CheckpointONNX wrote)"
    )
    with pytest.raises(ConfigError, match="has no weights to load"):
        okc.test(onnx_experiment(trained), checkpoint=trained["ckpt"])
