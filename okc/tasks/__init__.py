"""Tasks: what a batch becomes (``forward_with_gt``) and what inference is (``forward``)."""

from okc.tasks.base import BaseTask, InputSpec
from okc.tasks.classification import ClassificationTask
from okc.tasks.detection import SingleStageDetectionTask
from okc.tasks.multihead import MultiHeadClassificationTask
from okc.tasks.onnx import OnnxModel, ONNXTask, TorchScriptTask
from okc.tasks.pairwise import PairwiseLearnTask
from okc.tasks.segmentation import SegmentationTask
from okc.tasks.simclr import SimCLRTask
from okc.tasks.triplet import TripletLearnTask

__all__ = [
    "BaseTask",
    "ClassificationTask",
    "InputSpec",
    "MultiHeadClassificationTask",
    "ONNXTask",
    "OnnxModel",
    "PairwiseLearnTask",
    "SegmentationTask",
    "SimCLRTask",
    "SingleStageDetectionTask",
    "TorchScriptTask",
    "TripletLearnTask",
]
