"""Schedulers users ask for by name that ``torch.optim.lr_scheduler`` lacks.

- ``CosineAnnealingWarmup``: linear warmup then cosine decay, the usual recipe; torch only has it as
  ``SequentialLR`` over scheduler objects, which a config file cannot write.
- timm's schedulers (``CosineLRScheduler``, ``PlateauLRScheduler``, ...), which TorchOk registered.
  They do not follow torch's scheduler API; ``okc.optim.stepping`` calls them the timm way (TorchOk
  registered them but never could step them under Lightning 2).
"""

from __future__ import annotations

import math
from typing import Any

import timm.scheduler
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from okc.registry import SCHEDULERS

TIMM_SCHEDULERS = (
    "CosineLRScheduler", "MultiStepLRScheduler", "PlateauLRScheduler", "PolyLRScheduler",
    "StepLRScheduler", "TanhLRScheduler", "WSDLRScheduler",
)  # fmt: skip
for _name in TIMM_SCHEDULERS:
    if hasattr(timm.scheduler, _name):
        SCHEDULERS.register(getattr(timm.scheduler, _name))


def is_timm_scheduler(scheduler: Any) -> bool:
    return isinstance(scheduler, timm.scheduler.scheduler.Scheduler)


@SCHEDULERS.register
class CosineAnnealingWarmup(LRScheduler):
    """Linear warmup from ``warmup_start_factor · lr`` to ``lr`` over ``warmup_iters`` steps, then
    cosine annealing to ``eta_min`` at ``T_max`` (counted from the start, warmup included); after
    ``T_max`` the lr stays at ``eta_min``. Steps are scheduler steps: batches with
    ``interval: step``, epochs with ``interval: epoch``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        T_max: int,
        warmup_iters: int = 0,
        warmup_start_factor: float = 0.0,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if not 0 <= warmup_iters < T_max:
            raise ValueError(f"need 0 <= warmup_iters < T_max, got {warmup_iters} and {T_max}")
        if not 0.0 <= warmup_start_factor <= 1.0:
            raise ValueError(f"warmup_start_factor must be in [0, 1], got {warmup_start_factor}")
        self.T_max = T_max
        self.warmup_iters = warmup_iters
        self.warmup_start_factor = warmup_start_factor
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # closed form: the lr depends only on the step count
        return [self._lr(base, self.last_epoch) for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    def _lr(self, base: float, step: int) -> float:
        if step < self.warmup_iters:
            start = self.warmup_start_factor
            return base * (start + (1 - start) * step / self.warmup_iters)
        progress = min(1.0, (step - self.warmup_iters) / (self.T_max - self.warmup_iters))
        return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * progress)) / 2
