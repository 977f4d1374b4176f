"""Metrics: the MetricsManager that feeds torchmetrics (and registered) metrics per phase.

Importing this package registers okc's retrieval meters (``HitAtKMeter``, ...), the detection
mAP metrics and ``KNNAccuracy``.
"""

from okc.metrics import detection, knn, retrieval  # noqa: F401 - registration
from okc.metrics.manager import MetricsManager, check_metrics

__all__ = ["MetricsManager", "check_metrics"]
