"""Tasks: what a batch becomes (``forward_with_gt``) and what inference is (``forward``)."""

from okc.tasks.base import BaseTask, InputSpec
from okc.tasks.classification import ClassificationTask
from okc.tasks.detection import SingleStageDetectionTask
from okc.tasks.onnx import OnnxModel, ONNXTask, TorchScriptTask
from okc.tasks.segmentation import SegmentationTask

__all__ = [
    "BaseTask",
    "ClassificationTask",
    "InputSpec",
    "ONNXTask",
    "OnnxModel",
    "SegmentationTask",
    "SingleStageDetectionTask",
    "TorchScriptTask",
]
