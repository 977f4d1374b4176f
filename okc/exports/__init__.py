"""Export ``task.forward`` to ONNX, TorchScript or a pt2 (AOTInductor) package, quantize the
ONNX file to int8, and run an exported ONNX model.

    okc export experiments/shapes.yml --checkpoint runs/.../best.ckpt --format all
    okc export experiments/shapes.yml --checkpoint best --format pt2 --quantize int8

The example input comes from ``task.params.inputs`` (TorchOk's field); the batch dimension is
exported dynamic. After writing, okc runs the file (onnxruntime / torch.jit.load) on the example
and checks it agrees with PyTorch, so a broken export never passes silently.
"""

from okc.exports.onnx import export_onnx, export_verified_onnx
from okc.exports.pt2 import export_pt2, export_verified_pt2, load_pt2
from okc.exports.quantize import export_int8, quantize_int8
from okc.exports.run import export_experiment
from okc.exports.torchscript import export_torchscript
from okc.tasks.onnx import OnnxModel

__all__ = [
    "OnnxModel", "export_experiment", "export_int8", "export_onnx", "export_pt2",
    "export_torchscript", "export_verified_onnx", "export_verified_pt2", "load_pt2",
    "quantize_int8",
]  # fmt: skip
