"""Export ``task.forward`` to ONNX and TorchScript, and run an exported ONNX model.

    okc export experiments/shapes.yml --checkpoint runs/.../best.ckpt --format all

The example input comes from ``task.params.inputs`` (TorchOk's field); the batch dimension is
exported dynamic. After writing, okc runs the file (onnxruntime / torch.jit.load) on the example
and checks it agrees with PyTorch, so a broken export never passes silently.
"""

from okc.exports.onnx import export_onnx, export_verified_onnx
from okc.exports.run import export_experiment
from okc.exports.torchscript import export_torchscript
from okc.tasks.onnx import OnnxModel

__all__ = [
    "OnnxModel", "export_experiment", "export_onnx", "export_torchscript", "export_verified_onnx",
]  # fmt: skip
