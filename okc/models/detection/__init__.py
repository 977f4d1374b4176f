"""Detection models: the detection FPN (``DETECTION_NECKS``), the heads FCOS, RetinaNet and DETR
(``DETECTION_HEADS``) and the model that joins them to a backbone."""

from okc.models.detection.dense import DenseHead
from okc.models.detection.detr import DETRHead
from okc.models.detection.fcos import FCOSHead
from okc.models.detection.fpn import FPN
from okc.models.detection.model import (
    MODEL_KEYS,
    DetectionKeys,
    DetectionModel,
    build_detection_model,
    loss_keys,
)
from okc.models.detection.retinanet import RetinaNetHead
from okc.registry import DETECTION_HEADS, DETECTION_NECKS

__all__ = [
    "FPN", "MODEL_KEYS", "DETRHead", "DenseHead", "DetectionKeys", "DetectionModel", "FCOSHead",
    "RetinaNetHead", "build_detection_model", "loss_keys",
]  # fmt: skip

DETECTION_NECKS.register(FPN)
DETECTION_HEADS.register(FCOSHead)
DETECTION_HEADS.register(RetinaNetHead)
DETECTION_HEADS.register(DETRHead)
