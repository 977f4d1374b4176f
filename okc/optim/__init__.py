"""Optimization: optimizers over chosen parameters, param groups, schedulers and their stepping.

Importing this package registers ``CosineAnnealingWarmup`` and timm's schedulers; every
``torch.optim`` optimizer and ``torch.optim.lr_scheduler`` scheduler resolves by name.
"""

from okc.optim import schedulers  # noqa: F401 - registration
from okc.optim.build import OptimizerPair, build_optimization, check_optimization
from okc.optim.stepping import scheduler_step, step_schedulers

__all__ = [
    "OptimizerPair",
    "build_optimization",
    "check_optimization",
    "scheduler_step",
    "step_schedulers",
]
