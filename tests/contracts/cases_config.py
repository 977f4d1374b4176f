"""Cases of the components issue #12 adds for TorchOk's configs: callbacks, MLflow loggers,
ONNXTask (see README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from contracts.runners import Case, make


def _check_mlflow(name: str, case: Case, *, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  **_: Any) -> None:  # fmt: skip
    """Log, close, read the run back (MLflow's file store: no database to create)."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file:{tmp_path / 'mlruns'}"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    logger = make("loggers", name, Case(params={"tracking_uri": uri}), run_dir=tmp_path / "run",
                  experiment_name="contract", hyperparams={"task": {"name": "T"}})  # fmt: skip
    logger.log({"train/loss": 0.5}, step=1, epoch=0)
    logger.close("FAILED")
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("contract").experiment_id])
    assert run.info.status == "FAILED" and run.data.metrics == {"train/loss": 0.5}
    assert run.data.params == {"task.name": "T"}
    uploaded = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert uploaded == (["checkpoints/last.ckpt"] if name == "MLFlowLoggerX" else [])


def _check_onnx_task(name: str, case: Case, *, tmp_path: Path, **_: Any) -> None:
    from okc.exports import export_onnx
    from okc.models import build_model

    model = build_model({"backbone_name": "test_resnet", "pooling_name": "Pooling",
                         "head_name": "ClassificationHead", "head_params": {"num_classes": 3}})  # fmt: skip
    path = export_onnx(model, [torch.rand(2, 3, 16, 16)], tmp_path / "m.onnx",
                       output_names=["logits"])  # fmt: skip
    task = make("tasks", name, Case(params={"path_to_onnx": str(path)}))
    batch = {"image": torch.rand(2, 3, 16, 16), "target": torch.tensor([0, 2])}
    out = task.forward_with_gt(batch)
    assert set(out) == set(task.output_keys) == {"logits", "target"}
    with torch.no_grad():
        torch.testing.assert_close(
            out["logits"], model.eval()(batch["image"]), rtol=1e-4, atol=1e-4
        )


def _check_torchscript_task(name: str, case: Case, *, tmp_path: Path, **_: Any) -> None:
    from okc.exports import export_torchscript
    from okc.models import build_model

    model = build_model({"backbone_name": "test_resnet", "pooling_name": "Pooling",
                         "head_name": "ClassificationHead", "head_params": {"num_classes": 3}})  # fmt: skip
    path = export_torchscript(model, [torch.rand(2, 3, 16, 16)], tmp_path / "m.pt")
    task = make("tasks", name, Case(params={"path_to_model": str(path)}))
    batch = {"image": torch.rand(2, 3, 16, 16), "target": torch.tensor([0, 2])}
    out = task.forward_with_gt(batch)
    assert set(out) == set(task.output_keys) == {"output", "target"}
    with torch.no_grad():
        torch.testing.assert_close(out["output"], model.eval()(batch["image"]))


CASES: dict[tuple[str, str], Case] = {
    ("callbacks", "FinalizeLogger"): Case(),
    ("callbacks", "FreezeUnfreeze"): Case(
        params={"freeze_modules": [{"module_name": "backbone", "epoch": 1}]}
    ),
    ("callbacks", "CheckpointONNX"): Case(params={"save_last": True}),
    ("callbacks", "ModelCheckpointWithOnnx"): Case(params={"export_to_onnx": False}),
    ("loggers", "MLFlowLogger"): Case(check=_check_mlflow),
    ("loggers", "MLFlowLoggerX"): Case(check=_check_mlflow),
    ("tasks", "ONNXTask"): Case(check=_check_onnx_task),
    ("tasks", "TorchScriptTask"): Case(check=_check_torchscript_task),
}
