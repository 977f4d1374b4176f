"""ONNX export (torch.export-based exporter, one self-contained file) and an onnxruntime runner."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from okc.errors import OkcError


def export_onnx(
    module: nn.Module,
    example: Sequence[Tensor],
    path: str | Path,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] = ("output",),
) -> Path:
    """Write ``module`` (eval mode) to ``path`` with a dynamic batch dimension on every input."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(input_names or [f"input_{i}" if i else "input" for i in range(len(example))])
    batch = torch.export.Dim("batch", min=1)
    shapes = tuple({0: batch} for _ in example)
    module = module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's chatter about its own internals
        try:
            program = torch.onnx.export(
                module, tuple(example), dynamo=True, dynamic_shapes=shapes,
                input_names=names, output_names=list(output_names), verbose=False,
            )  # fmt: skip
        except Exception as err:
            raise OkcError(f"ONNX export failed: {type(err).__name__}: {err}") from err
    program.save(str(path), external_data=False)  # one file: weights inside
    return path


class OnnxModel:
    """An exported model on onnxruntime, called like the torch module it came from."""

    def __init__(self, path: str | Path, *, providers: Sequence[str] | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise OkcError(f"ONNX model not found: {path}")
        available = ort.get_available_providers()
        chosen = [p for p in (providers or available) if p in available] or available
        self.session = ort.InferenceSession(str(path), providers=chosen)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, *inputs: Tensor | np.ndarray) -> Tensor | tuple[Tensor, ...]:
        feed = {
            name: x.detach().cpu().numpy() if isinstance(x, Tensor) else x
            for name, x in zip(self.input_names, inputs, strict=True)
        }
        outputs = [torch.from_numpy(o) for o in self.session.run(self.output_names, feed)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)
