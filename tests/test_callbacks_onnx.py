"""CheckpointONNX: an ONNX file beside each checkpoint that computes what the checkpoint's
weights compute, removed with its checkpoint; TorchOk's old name and params."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import okc
from okc.engine.build import build_task
from okc.engine.weights import load_weights
from okc.errors import ConfigError, ConfigErrors
from okc.tasks.onnx import OnnxModel

SHORT = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1")


def with_callback(tiny_exp, name: str, *overrides: str, **params: Any) -> okc.Experiment:
    callback = json.dumps({"name": name, "params": params})
    return tiny_exp(*SHORT, f"+callbacks=[{callback}]", *overrides)


@pytest.mark.slow  # four exports (about 40 s on 2 busy cores)
def test_an_onnx_file_beside_each_checkpoint(tiny_exp) -> None:
    exp = with_callback(tiny_exp, "CheckpointONNX", "trainer.max_epochs=2", monitor="valid/loss",
                        save_top_k=1, save_last=True, filename="{epoch}")  # fmt: skip
    result = okc.fit(exp)
    folder = result.run_dir / "checkpoints"
    ckpts = {p.stem for p in folder.glob("*.ckpt")}
    assert ckpts == {p.stem for p in folder.glob("*.onnx")}  # evicted ones left together
    assert "last" in ckpts and len(ckpts) == 2
    task = build_task(exp).eval()
    for stem in ckpts:
        load_weights(task.model, folder / f"{stem}.ckpt")
        x = torch.rand(3, 3, 16, 16)  # another batch size than the export's example
        with torch.no_grad():
            expected = task(x)
        got = OnnxModel(folder / f"{stem}.onnx")(x)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_remove_head_exports_the_embedding(tiny_exp) -> None:
    exp = with_callback(tiny_exp, "CheckpointONNX", remove_head=True, save_top_k=0, save_last=True,
                        onnx_params={"input_names": ["input.1"], "output_names": ["emb"]})  # fmt: skip
    result = okc.fit(exp)
    model = OnnxModel(result.run_dir / "checkpoints" / "last.onnx")
    assert model.input_names == ["input.1"] and model.output_names == ["emb"]
    task = build_task(exp).eval()
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, task.model.embedding_channels)


def test_old_name_with_its_switch(tiny_exp) -> None:
    exp = with_callback(tiny_exp, "ModelCheckpointWithOnnx", save_last=True,
                        export_to_onnx=False, onnx_params={"opset_version": 18})  # fmt: skip
    with pytest.warns(FutureWarning, match="use CheckpointONNX"):
        result = okc.fit(exp)
    folder = result.run_dir / "checkpoints"
    assert (folder / "last.ckpt").is_file() and not list(folder.glob("*.onnx"))


def test_an_opset_the_exporter_cannot_write_is_reported(tiny_exp) -> None:
    exp = with_callback(tiny_exp, "CheckpointONNX", save_top_k=0, save_last=True,
                        onnx_params={"opset_version": 16})  # fmt: skip
    with pytest.warns(UserWarning, match="opset 16 was asked for, the exporter wrote opset 18"):
        result = okc.fit(exp)
    assert (result.run_dir / "checkpoints" / "last.onnx").is_file()


def test_errors(tiny_exp) -> None:
    with pytest.raises(ConfigErrors) as err:
        okc.fit(with_callback(tiny_exp, "CheckpointONNX", onnx_params={"opset_versio": 17}))
    assert "callbacks.0.params.onnx_params.opset_versio: okc exports with torch.onnx.export" in str(
        err.value
    )
    assert "did you mean 'opset_version'?" in str(err.value)
    no_inputs = with_callback(tiny_exp, "CheckpointONNX", "~task.params.inputs")
    with pytest.raises(ConfigError, match=r"^callbacks\.0\.params\.onnx_params: CheckpointONNX"):
        okc.fit(no_inputs)
    errors = okc.check(with_callback(tiny_exp, "ModelCheckpointWithOnnx", monitr="valid/loss"))
    assert [str(e) for e in errors] == [
        "callbacks.0.params.monitr: ModelCheckpointWithOnnx has no parameter 'monitr', "
        "did you mean 'monitor'?"
    ]


def test_exported_example_with_a_float16_input_dtype(tiny_exp, tmp_path: Path) -> None:
    """TorchOk's CIFAR configs declare float16 inputs with a float32 model: the graph takes
    float16 and casts inside, so a float16 feed works."""
    exp = tiny_exp(*SHORT, "task.params.inputs.0.dtype=float16")
    (path,) = okc.export(exp, output=tmp_path / "m.onnx")
    model = OnnxModel(path)
    assert model.input_dtype(model.input_names[0]) == torch.float16
    assert model(torch.rand(2, 3, 16, 16).half()).shape == (2, 4)
