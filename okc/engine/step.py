"""The compiled part of a step: batch → task outputs → joint loss.

``torch.compile`` takes this module (forward + loss; autograd compiles the backward from it); the
optimizer step and the Kornia augmentations stay eager (see env.md: compiling zero_grad/backward
breaks the graph, Kornia does not compile fullgraph). ``trainer.compile: auto`` compiles on GPUs
and stays eager on CPUs, where compiling a convnet costs ~50 s and buys nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from okc.paths import inductor_cache_dir
from okc.tasks.base import BaseTask

StepOut = tuple[Tensor | None, dict[str, Tensor], dict[str, Tensor]]


class TrainingModule(nn.Module):
    """``forward(batch)`` → (total loss or None, loss parts, task outputs)."""

    def __init__(self, task: BaseTask, joint_loss: nn.Module | None) -> None:
        super().__init__()
        self.task = task
        self.joint_loss = joint_loss

    def forward(self, batch: Mapping[str, Tensor], with_loss: bool = True) -> StepOut:
        outputs = self.task.forward_with_gt(batch)
        if not with_loss or self.joint_loss is None:
            return None, {}, outputs
        if not self.joint_loss.required_keys <= outputs.keys():  # dict keys: no sync, no graph
            self.joint_loss.check_outputs(outputs.keys())  # a ConfigError naming the mapping
        total, parts = self.joint_loss(outputs)
        return total, parts, outputs


def shard_units(model: nn.Module) -> list[nn.Module]:
    """Modules FSDP2 shards one by one: the model's pieces, each called via ``__call__``."""
    return [m for m in model.children() if any(True for _ in m.parameters())]


def should_compile(setting: bool | str, device: torch.device) -> bool:
    return device.type == "cuda" if setting == "auto" else bool(setting)


def maybe_compile(module: nn.Module, *, setting: bool | str, device: torch.device) -> nn.Module:
    """``torch.compile(module)`` when ``trainer.compile`` asks for it, with okc's inductor cache."""
    if not should_compile(setting, device):
        return module
    # A persistent cache turns the ~50 s cold compile into seconds on the next run.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(inductor_cache_dir()))
    return torch.compile(module)
