"""ONNX export (the torch.export-based exporter, one self-contained file), checked by running the
file on onnxruntime against PyTorch."""

from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from okc.errors import OkcError
from okc.tasks.onnx import OnnxModel

TOLERANCE = 1e-4
# torch.onnx.export options a config may pass (CheckpointONNX's onnx_params)
ONNX_OPTIONS = ("opset_version", "input_names", "output_names", "dynamic_axes", "export_params",
                "verbose")  # fmt: skip


def export_onnx(
    module: nn.Module,
    example: Sequence[Tensor],
    path: str | Path,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] = ("output",),
    opset_version: int | None = None,
    dynamic_axes: Mapping[str, Any] | None = None,
    **options: Any,
) -> Path:
    """Write ``module`` (eval mode) to ``path``; every input's batch dimension is dynamic unless
    ``dynamic_axes`` says otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(input_names or [f"input_{i}" if i else "input" for i in range(len(example))])
    shapes = None
    if dynamic_axes is None:
        batch = torch.export.Dim("batch", min=1)
        shapes = tuple({0: batch} for _ in example)
        params = inspect.signature(module.forward).parameters.values()
        if any(p.kind is p.VAR_POSITIONAL for p in params):
            shapes = (shapes,)  # torch.export sees ``*inputs`` as one tuple argument
    module = module.eval()
    with warnings.catch_warnings(), _quiet("onnxscript"), _quiet("torch.onnx"):
        warnings.simplefilter("ignore")  # the exporter's chatter about its own internals
        try:
            program = torch.onnx.export(
                module, tuple(example), dynamo=True, dynamic_shapes=shapes,
                dynamic_axes=dynamic_axes, input_names=names, output_names=list(output_names),
                opset_version=opset_version, verbose=False, **options,
            )  # fmt: skip
        except Exception as err:
            raise OkcError(f"ONNX export failed: {type(err).__name__}: {err}") from err
    program.save(str(path), external_data=False)  # one file: weights inside
    if opset_version is not None:
        _check_opset(path, opset_version)
    return path


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Silence a library's logger (the exporter logs tracebacks of fallbacks it recovers from)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_opset(path: Path, wanted: int) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    got = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != wanted:
        warnings.warn(
            f"{path.name}: opset {wanted} was asked for, the exporter wrote opset {got} (the "
            "torch.export-based exporter writes opset 18 or later); onnxruntime runs both",
            stacklevel=4,
        )


class CastInputs(nn.Module):
    """Runs ``module`` on inputs cast to its dtype, so the exported graph takes the dtype the
    experiment declares (``inputs: [{dtype: float16}]``) while the weights keep theirs."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, *inputs: Tensor) -> Any:
        return self.module(*(x.to(self.dtype) if x.is_floating_point() else x for x in inputs))


def for_inputs(module: nn.Module, example: Sequence[Tensor]) -> nn.Module:
    """``module``, wrapped in ``CastInputs`` when a floating input differs from its dtype."""
    param = next(module.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    if any(x.is_floating_point() and x.dtype != dtype for x in example):
        return CastInputs(module, dtype)
    return module


def export_verified_onnx(
    module: nn.Module, example: Sequence[Tensor], path: str | Path, **options: Any
) -> Path:
    """Export, then run the file on onnxruntime and warn if it disagrees with PyTorch."""
    module = for_inputs(module.eval(), example)
    with torch.no_grad():
        expected = module(*example)
    path = export_onnx(module, example, path, **options)
    verify(path, OnnxModel(path)(*example), expected)
    return path


def verify(path: Path, got: Any, expected: Any) -> None:
    pairs = zip(got, expected, strict=True) if isinstance(got, tuple) else [(got, expected)]
    diff = max((g.float() - e.float()).abs().max().item() for g, e in pairs)
    if diff > TOLERANCE:
        warnings.warn(
            f"{path}: the exported model differs from PyTorch by up to {diff:.2e}", stacklevel=3
        )
