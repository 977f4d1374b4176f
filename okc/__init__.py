"""okc: a compile-first, config-driven computer-vision training framework.

import okc
exp = okc.load_experiment("experiments/shapes.yml", ["trainer.max_epochs=2"])
result = okc.fit(exp)
okc.test(exp, checkpoint=result.best_checkpoint)
"""

from okc.api import check, export, find_lr, fit, predict, test, validate
from okc.config.load import load_experiment
from okc.config.schema import Experiment, Phase
from okc.errors import ConfigError, ConfigErrors, OkcError
from okc.registry import (
    AUGMENTATIONS,
    BACKBONES,
    CALLBACKS,
    DATASETS,
    HEADS,
    LOGGERS,
    LOSSES,
    METRICS,
    NECKS,
    OPTIMIZERS,
    POOLINGS,
    SAMPLERS,
    SCHEDULERS,
    TASKS,
    Registry,
)  # fmt: skip
from okc.version import __version__

__all__ = [
    "AUGMENTATIONS",
    "BACKBONES",
    "CALLBACKS",
    "DATASETS",
    "HEADS",
    "LOGGERS",
    "LOSSES",
    "METRICS",
    "NECKS",
    "OPTIMIZERS",
    "POOLINGS",
    "SAMPLERS",
    "SCHEDULERS",
    "TASKS",
    "ConfigError",
    "ConfigErrors",
    "Experiment",
    "OkcError",
    "Phase",
    "Registry",
    "__version__",
    "check",
    "export",
    "find_lr",
    "fit",
    "load_experiment",
    "predict",
    "test",
    "validate",
]  # fmt: skip
