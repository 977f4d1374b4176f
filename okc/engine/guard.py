"""Non-finite losses: found without a host sync per step, reported with the step and loss part.

In ``error`` mode the guard records, on the device, the first step whose loss was not finite and
every loss part's value at that step; the loop checks it at its sync points (logging steps, epoch
ends, before saving a checkpoint). In ``skip`` mode the loop asks ``is_finite`` each step (one
host sync per step, the price of skipping the batch before its update).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from okc.errors import OkcError


class NonFiniteLossError(OkcError):
    pass


class NonFiniteGuard:
    def __init__(self, device: torch.device) -> None:
        self.first_step = torch.full((), -1, dtype=torch.long, device=device)
        self.values: Tensor | None = None
        self.names: list[str] = []

    def observe(self, step: int, total: Tensor, parts: dict[str, Tensor]) -> None:
        """Record ``step`` if it is the first non-finite one (no sync)."""
        vals = torch.stack([total.detach().float(), *(p.detach().float() for p in parts.values())])
        if self.values is None:
            self.names = ["loss", *parts]
            self.values = torch.zeros_like(vals)
        first = ~torch.isfinite(vals[0]) & (self.first_step < 0)
        self.first_step = torch.where(first, step, self.first_step)
        self.values = torch.where(first, vals, self.values)

    def check(self, *, hint: str) -> None:
        """Raise if any observed loss was not finite.  # sync point"""
        step = int(self.first_step.item())
        if step < 0:
            return
        assert self.values is not None
        values = dict(zip(self.names, self.values.tolist(), strict=True))
        bad = [k for k, v in values.items() if not math.isfinite(v) and k != "loss"]
        listed = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        culprit = f" from {', '.join(bad)}" if bad else ""
        raise NonFiniteLossError(
            f"the loss is not finite at step {step}{culprit} ({listed}). {hint}"
        )

    @staticmethod
    def is_finite(total: Tensor) -> bool:
        return bool(torch.isfinite(total).item())  # sync point (skip mode only)
