"""int8 ONNX: static quantization with onnxruntime, calibrated on the experiment's VALID batches,
then judged on VALID against the fp32 model.

``onnxruntime.quantization.quantize_static`` writes QDQ (QuantizeLinear/DequantizeLinear pairs
around each quantized op: the format every onnxruntime execution provider reads) with int8
weights per output channel and uint8 activations (the pairing x86 CPUs run fastest). The
activation ranges come from ``num_batches`` VALID batches read through okc's own pipeline
(``CalibrationDataReader``), so calibration sees the images the model saw in validation: same
decode, resize and normalization. We use onnxruntime's quantizer rather than torch's (PT2E): the
result is a plain ONNX file that any onnxruntime runs, which is what ``okc export`` delivers.

The check afterwards runs the fp32 and int8 files on every VALID batch: top-1 accuracy of each
(when the model's first output is ``(B, C)`` scores and the batch has class indices) and how
often their argmax agrees (any output with a class dimension, e.g. segmentation maps).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor

from okc.config.schema import Experiment, Phase
from okc.data.pipeline import build_pipeline
from okc.errors import ConfigError, OkcError, at
from okc.tasks.onnx import OnnxModel

INT8_SUFFIX = ".int8.onnx"


def check_quantize(exp: Experiment, quantize: str, num_batches: int) -> None:
    """The int8 request's problems, found before anything is exported."""
    if quantize != "int8":
        raise ConfigError("--quantize", f"unknown quantization '{quantize}'; okc writes int8")
    if num_batches < 1:
        raise ConfigError("--calibration-batches", f"expected at least 1, got {num_batches}")
    if not exp.data.VALID:
        raise ConfigError("data.VALID", "int8 export calibrates and checks on VALID batches: "
                          "the experiment has no VALID data")  # fmt: skip


def valid_batches(exp: Experiment, *, max_batches: int | None = None) -> Iterator[dict[str, Any]]:
    """VALID batches as the model sees them in validation (on the CPU, transformed)."""
    with at("data.VALID.0"):
        pipeline = build_pipeline(exp.data.VALID[0], phase=Phase.VALID)
    pipeline.set_epoch(0)
    for batch in itertools.islice(pipeline, max_batches):
        yield pipeline.to_device(batch)


def _calibration_reader(batches: Iterator[dict[str, Any]], *, input_name: str, key: str) -> Any:
    """onnxruntime's ``CalibrationDataReader`` over okc batches (it is an ABC with one method:
    ``get_next``, None at the end)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(batches, None)
            return None if batch is None else {input_name: batch[key].float().numpy()}

    return Reader()


def quantize_int8(
    exp: Experiment, fp32: str | Path, output: str | Path, *, key: str, num_batches: int
) -> Path:
    """Write the statically quantized ``output`` from the fp32 ONNX file ``fp32``."""
    import onnxruntime.quantization as ortq

    model = OnnxModel(fp32)
    if len(model.input_names) != 1:
        raise OkcError(f"int8 export quantizes one-input models; {fp32} has "
                       f"{model.input_names}")  # fmt: skip
    output = Path(output)
    prepared = output.with_suffix(".prep.onnx")
    reader = _calibration_reader(valid_batches(exp, max_batches=num_batches),
                                 input_name=model.input_names[0], key=key)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnxruntime's advice about pre-processing, logged per op
        try:
            # shape inference and graph optimization first, as onnxruntime recommends
            ortq.quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            ortq.quantize_static(
                str(prepared), str(output), reader, quant_format=ortq.QuantFormat.QDQ,
                activation_type=ortq.QuantType.QUInt8, weight_type=ortq.QuantType.QInt8,
                per_channel=True,
                calibrate_method=ortq.CalibrationMethod.MinMax,
            )  # fmt: skip
        except (ConfigError, OkcError):
            raise
        except Exception as err:
            raise OkcError(f"int8 quantization failed: {type(err).__name__}: {err}") from err
        finally:
            prepared.unlink(missing_ok=True)
    return output


@attrs.frozen
class Int8Check:
    """The fp32 and int8 files on the same VALID samples."""

    num_samples: int
    agreement: float  # share of argmax decisions the int8 model shares with fp32
    fp32_accuracy: float | None = None  # top-1, when the task is classification
    int8_accuracy: float | None = None

    @property
    def drop_points(self) -> float | None:
        if self.fp32_accuracy is None or self.int8_accuracy is None:
            return None
        return 100 * (self.fp32_accuracy - self.int8_accuracy)


def compare_on_valid(exp: Experiment, fp32: str | Path, int8: str | Path, *, key: str) -> Int8Check:
    """Run both files on every VALID batch; accuracy where there are class targets."""
    models = (OnnxModel(fp32), OnnxModel(int8))
    images = samples = agree = 0
    correct = [0, 0]
    classified = True
    for batch in valid_batches(exp):
        outs = [_first(m(batch[key].float())) for m in models]
        picks = [o.argmax(1) for o in outs]
        agree += int((picks[0] == picks[1]).sum())
        samples += picks[0].numel()  # decisions: one per image, or per pixel
        images += outs[0].shape[0]
        target = batch.get("target")
        classified = classified and _is_class_target(outs[0], target)
        if classified:
            for i, pick in enumerate(picks):
                correct[i] += int((pick == target).sum())
    if samples == 0:
        raise ConfigError("data.VALID", "no VALID batch to check the int8 model on")
    if not classified:
        return Int8Check(images, agree / samples)
    return Int8Check(images, agree / samples, correct[0] / samples, correct[1] / samples)


def _first(out: Tensor | tuple[Tensor, ...]) -> Tensor:
    return out[0] if isinstance(out, tuple) else out


def _is_class_target(scores: Tensor, target: Any) -> bool:
    return (
        isinstance(target, Tensor) and scores.ndim == 2 and target.ndim == 1
        and not torch.is_floating_point(target)
    )  # fmt: skip


def export_int8(
    exp: Experiment,
    task: Any,
    fp32: Path,
    *,
    quantize: str = "int8",
    num_batches: int = 8,
    pt2: Path | None = None,
) -> list[Path]:
    """``fp32`` quantized to ``<stem>.int8.onnx``, checked on VALID, and ``<stem>.int8.json``:
    the check and the latency (batch 1 and 32) of torch eager, fp32 ONNX, int8 ONNX and the pt2
    package when there is one."""
    import json

    from okc.exports.latency import measure_latency, onnx_runner
    from okc.exports.pt2 import load_pt2

    check_quantize(exp, quantize, num_batches)
    key = task.input_key
    int8 = quantize_int8(exp, fp32, fp32.with_name(fp32.stem + INT8_SUFFIX), key=key,
                         num_batches=num_batches)  # fmt: skip
    check = compare_on_valid(exp, fp32, int8, key=key)
    runners = {"torch eager": task, "onnx fp32": onnx_runner(fp32), "onnx int8": onnx_runner(int8)}
    if pt2 is not None:
        runners["pt2 (AOTInductor)"] = load_pt2(pt2)
    latency = measure_latency(runners, lambda b: task.example_inputs(batch_size=b)[0])
    report = {
        "calibration_batches": num_batches,
        "valid": {**attrs.asdict(check), "drop_points": check.drop_points},
        "latency_ms": latency,
    }
    path = fp32.with_name(fp32.stem + ".int8.json")
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return [int8, path]
