"""torch.export + AOTInductor: a ``.pt2`` package, compiled ahead of time, that
``torch._inductor.aoti_load_package`` runs without okc (and without Python model code).

This is torch's forward-looking deployment path (TorchScript is deprecated upstream): the graph is
captured by ``torch.export`` with a dynamic batch dimension, Inductor compiles it to a shared
library for the device the model is on, and the package holds that library and the weights. A
package runs on the kind of device (and CPU architecture) it was compiled for. Compiling calls a
C++ compiler and takes a while on a CPU (tens of seconds for a small convnet on 2 cores).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from okc.errors import OkcError
from okc.exports.onnx import for_inputs, verify


def dynamic_batch(module: nn.Module, example: Sequence[Tensor]) -> tuple[Any, ...]:
    """``dynamic_shapes`` for ``torch.export``: every input's dimension 0 is one symbol
    ``batch``. ``min=1``: torch.export specializes sizes 0 and 1 unless told the range."""
    import inspect

    batch = torch.export.Dim("batch", min=1)
    shapes: tuple[Any, ...] = tuple({0: batch} for _ in example)
    params = inspect.signature(module.forward).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        shapes = (shapes,)  # torch.export sees ``*inputs`` as one tuple argument
    return shapes


def export_pt2(module: nn.Module, example: Sequence[Tensor], path: str | Path) -> Path:
    """Export ``module`` (eval mode) and compile it into the AOTInductor package ``path``."""
    from torch._inductor import aoti_compile_and_package

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes about its own internals
        try:
            program = torch.export.export(
                module, tuple(example), dynamic_shapes=dynamic_batch(module, example)
            )
            written = aoti_compile_and_package(program, package_path=str(path))
        except Exception as err:
            raise OkcError(f"pt2 export failed: {type(err).__name__}: {err}") from err
    return Path(written)


def load_pt2(path: str | Path) -> Any:
    """The package as a callable (``model(*inputs)``), as a deployment would load it."""
    from torch._inductor import aoti_load_package

    return aoti_load_package(str(path))


def export_verified_pt2(module: nn.Module, example: Sequence[Tensor], path: str | Path) -> Path:
    """Export, load the package back and warn if it disagrees with PyTorch (as ONNX does)."""
    module = for_inputs(module.eval(), example)
    with torch.no_grad():
        expected = module(*example)
    path = export_pt2(module, example, path)
    got = load_pt2(path)(*example)
    verify(path, tuple(got) if isinstance(got, list) else got, expected)
    return path
