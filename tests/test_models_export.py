"""Every standard model compiles without graph breaks, traces, and exports to ONNX faithfully."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest
import torch

from okc.models import Model, build_model

X = torch.randn(2, 3, 32, 32)
CLASSIFICATION = {
    "backbone_name": "test_resnet",
    "neck_name": "FPN",
    "neck_params": {"out_channels": 16},
    "pooling_name": "GeM",
    "head_name": "ClassificationHead",
    "head_params": {"num_classes": 5},
}
SEGMENTATION = {
    "backbone_name": "test_efficientnet",
    "neck_name": "UNet",
    "head_name": "SegmentationHead",
    "head_params": {"num_classes": 3},
}
ARCFACE = {
    "backbone_name": "test_vit",
    "backbone_params": {"img_size": 32},
    "pooling_name": "Pooling",
    "pooling_params": {"pooling_type": "catavgmax"},
    "head_name": "ArcFaceHead",
    "head_params": {"num_classes": 4},
}
MODELS = {"classification": CLASSIFICATION, "segmentation": SEGMENTATION, "arcface": ARCFACE}


def model(params: dict[str, Any]) -> Model:
    torch.manual_seed(0)
    return build_model(params).eval()


@pytest.mark.compile
@pytest.mark.parametrize("name", ["segmentation", "arcface"])
def test_compiles_in_one_graph_with_training_path(name: str) -> None:
    """aot_eager checks graph capture (forward and backward) in seconds, without codegen."""
    net = build_model(MODELS[name]).train()
    target = torch.tensor([0, 2])
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    out = compiled(X, target)
    torch.testing.assert_close(out, net(X, target))
    out.sum().backward()


@pytest.mark.compile
def test_compiles_with_inductor() -> None:
    net = model({**CLASSIFICATION, "neck_name": None, "neck_params": None})
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(net, fullgraph=True)(X), net(X))


@pytest.mark.parametrize("name", MODELS)
def test_torchscript_trace(name: str) -> None:
    net = model(MODELS[name])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        traced = torch.jit.trace(net, (X,))
    # timm's ViT patch embedding checks the image size and warns; okc's own code must not.
    assert not [w for w in caught if f"{os.sep}okc{os.sep}" in w.filename]
    torch.testing.assert_close(traced(X), net(X))


@pytest.mark.parametrize("name", MODELS)
def test_onnx_export_with_dynamic_batch(name: str, tmp_path: Path) -> None:
    net = model(MODELS[name])
    path = tmp_path / "model.onnx"
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        net,
        (X,),
        str(path),
        dynamo=True,
        external_data=False,
        dynamic_shapes=({0: batch},),
        input_names=["image"],
        output_names=["output"],
        verbose=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 32, 32)  # another batch size than the export's
    [got] = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        expected = net(x).numpy()
    assert got.shape == expected.shape
    assert abs(got - expected).max() < 1e-4
