"""Metrics: the MetricsManager that feeds torchmetrics (and registered) metrics per phase.

Importing this package registers okc's retrieval meters (``HitAtKMeter``, ...) and the detection
mAP metrics.
"""

from okc.metrics import detection, retrieval  # noqa: F401 - registration
from okc.metrics.manager import MetricsManager, check_metrics

__all__ = ["MetricsManager", "check_metrics"]
