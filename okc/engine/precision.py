"""Numeric precision as one object the loop calls, so the loop never branches on dtype.

``trainer.precision`` (Lightning's names) picks one of:

- ``32`` / ``32-true``: float32, nothing to do;
- ``16-mixed`` / ``16``: float16 autocast plus a GradScaler (fp16 overflows without one);
- ``bf16-mixed`` / ``bf16``: bfloat16 autocast, no scaler (bf16 has float32's range);
- ``bf16-true`` / ``16-true`` / ``64-true`` / ``64``: the model and inputs in that dtype.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

_TRUE = {
    "32": torch.float32, "32-true": torch.float32, "64": torch.float64, "64-true": torch.float64,
    "bf16-true": torch.bfloat16, "16-true": torch.float16,
}  # fmt: skip
_MIXED = {
    "16": torch.float16, "16-mixed": torch.float16, "bf16": torch.bfloat16,
    "bf16-mixed": torch.bfloat16,
}  # fmt: skip


class Precision:
    """Owns autocast, loss scaling and the optimizer step."""

    def __init__(self, setting: int | str, device: torch.device) -> None:
        key = str(setting)
        assert key in _TRUE or key in _MIXED, f"schema admits only known precisions, got {key}"
        self.name = key
        self.device = device
        self.param_dtype = _TRUE.get(key, torch.float32)
        self.autocast_dtype = _MIXED.get(key)
        self.scaler = (
            torch.amp.GradScaler(device.type) if self.autocast_dtype is torch.float16 else None
        )

    def __repr__(self) -> str:
        return f"Precision({self.name!r})"

    @property
    def half(self) -> bool:
        """Whether the step computes in 16 bits (mixed or true): what GPU tensor cores want."""
        return (self.autocast_dtype or self.param_dtype) in (torch.float16, torch.bfloat16)

    def convert_module(self, module: nn.Module) -> nn.Module:
        return module.to(self.param_dtype) if self.param_dtype != torch.float32 else module

    def convert_input(self, x: Tensor) -> Tensor:
        """Floating inputs follow the parameters' dtype (autocast handles the mixed cases)."""
        return x.to(self.param_dtype) if x.is_floating_point() else x

    @contextlib.contextmanager
    def forward_context(self) -> Iterator[None]:
        if self.autocast_dtype is None:
            yield
        else:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                yield

    def backward(self, loss: Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients back to their true scale (before clipping)."""
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)  # skips the step when gradients overflowed
        else:
            optimizer.step()

    def update(self) -> None:
        """After all optimizers stepped: adapt the loss scale."""
        if self.scaler:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict()} if self.scaler else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
