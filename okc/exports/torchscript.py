"""TorchScript export by tracing (``torch.jit`` is deprecated upstream but still what many
serving stacks load; ONNX or torch.export are the forward-looking formats)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from okc.errors import OkcError
from okc.tasks.onnx import load_torchscript

__all__ = ["export_torchscript", "load_torchscript"]


def export_torchscript(module: nn.Module, example: Sequence[Tensor], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        try:
            traced = torch.jit.trace(module.eval(), tuple(example), check_trace=False)
        except Exception as err:
            raise OkcError(f"TorchScript export failed: {type(err).__name__}: {err}") from err
        traced.save(str(path))
    return path
