"""``okc export``: build the task, load its weights, write the files, verify them."""

from __future__ import annotations

from pathlib import Path

import torch

from okc.config.schema import Experiment
from okc.engine.build import build_task
from okc.engine.weights import load_evaluation_weights
from okc.errors import OkcError
from okc.exports.onnx import export_verified_onnx, for_inputs, verify
from okc.exports.pt2 import export_verified_pt2
from okc.exports.quantize import check_quantize, export_int8
from okc.exports.torchscript import export_torchscript, load_torchscript
from okc.paths import okc_home


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
    quantize: str | None = None,
    calibration_batches: int = 8,
) -> list[Path]:
    """Export the experiment's model; returns the files written (``.onnx``, ``.pt``, ``.pt2``;
    with ``quantize="int8"`` also ``.int8.onnx`` and its report ``.int8.json``)."""
    if quantize:
        check_quantize(exp, quantize, calibration_batches)
    task = build_task(exp)
    load_evaluation_weights(task.model, exp, checkpoint, stage="export")
    task.eval()
    example = task.example_inputs(batch_size=2)
    stem = _stem(exp, checkpoint, output)
    written = []
    if fmt in ("onnx", "all") or quantize:  # int8 quantizes the fp32 ONNX file
        onnx_path = stem.with_suffix(".onnx")
        written.append(
            export_verified_onnx(task, example, onnx_path, output_names=task.output_names)
        )
    if fmt in ("torchscript", "all"):
        module = for_inputs(task, example)
        path = export_torchscript(module, example, stem.with_suffix(".pt"))
        with torch.no_grad():
            verify(path, load_torchscript(path)(*example), module(*example))
        written.append(path)
    if fmt == "pt2":
        written.append(export_verified_pt2(task, example, stem.with_suffix(".pt2")))
    if quantize:
        pt2 = stem.with_suffix(".pt2") if fmt == "pt2" else None
        written += export_int8(exp, task, stem.with_suffix(".onnx"), quantize=quantize,
                               num_batches=calibration_batches, pt2=pt2)  # fmt: skip
    if not written:
        raise OkcError(f"unknown export format '{fmt}'; use onnx, torchscript, pt2 or all")
    return written
