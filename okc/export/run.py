"""``okc export``: build the task, load its weights, write the files, verify them."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from okc.config.schema import Experiment
from okc.engine.build import build_task
from okc.engine.weights import load_evaluation_weights
from okc.errors import OkcError
from okc.export.onnx import OnnxModel, export_onnx
from okc.export.torchscript import export_torchscript, load_torchscript
from okc.paths import okc_home

TOLERANCE = 1e-4


def _stem(exp: Experiment, checkpoint: str | Path | None, output: str | Path | None) -> Path:
    if output is not None:
        return Path(output).expanduser().with_suffix("")
    if checkpoint is not None:
        return Path(checkpoint).expanduser().with_suffix("")
    return okc_home() / "exports" / (exp.name or "model")


def export_experiment(
    exp: Experiment,
    *,
    checkpoint: str | Path | None = None,
    output: str | Path | None = None,
    fmt: str = "onnx",
) -> list[Path]:
    """Export the experiment's model; returns the files written (``.onnx`` and/or ``.pt``)."""
    task = build_task(exp)
    load_evaluation_weights(task.model, exp, checkpoint, stage="export")
    task.eval()
    example = task.example_inputs(batch_size=2)
    with torch.no_grad():
        expected = task(*example)
    stem = _stem(exp, checkpoint, output)
    written = []
    if fmt in ("onnx", "all"):
        path = export_onnx(task, example, stem.with_suffix(".onnx"))
        _verify(path, OnnxModel(path)(*example), expected)
        written.append(path)
    if fmt in ("torchscript", "all"):
        path = export_torchscript(task, example, stem.with_suffix(".pt"))
        with torch.no_grad():
            _verify(path, load_torchscript(path)(*example), expected)
        written.append(path)
    if not written:
        raise OkcError(f"unknown export format '{fmt}'; use onnx, torchscript or all")
    return written


def _verify(path: Path, got: torch.Tensor, expected: torch.Tensor) -> None:
    diff = (got.float() - expected.float()).abs().max().item()
    if diff > TOLERANCE:
        warnings.warn(
            f"{path}: the exported model differs from PyTorch by up to {diff:.2e}", stacklevel=3
        )
