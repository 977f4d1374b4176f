"""Metrics: the MetricsManager that feeds torchmetrics (and registered) metrics per phase."""

from okc.metrics import detection  # noqa: F401 - registers the detection mAP metrics
from okc.metrics.manager import MetricsManager, check_metrics

__all__ = ["MetricsManager", "check_metrics"]
