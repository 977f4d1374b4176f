"""``ONNXTask``: test and predict with an exported model on onnxruntime, on the experiment's own
TEST/PREDICT data and metrics (TorchOk's ``examples/configs/onnx_infer.yaml``); ``TorchScriptTask``
does the same with a TorchScript file (``okc export --format torchscript``).

Params (TorchOk's): ``path_to_onnx``; ``providers``, onnxruntime's execution providers in order
of preference (``CUDAExecutionProvider``, ``CPUExecutionProvider``; a provider this onnxruntime
lacks is skipped with a warning); ``keys_mapping_onnx2dataset``, ``{ONNX input name: batch key}``
(default: a one-input model reads ``image``).

Output keys: the ONNX model's output names (what metric ``mapping`` values refer to), plus
``target`` when the batch has one. Each input is checked against the shape the model declares
(symbolic dims such as the batch accept any size) and cast to its element type, so a wrong image
size is one error naming the expected shape, not an onnxruntime trace.

``OnnxModel`` (the runner) lives here rather than in ``okc.exports`` because tasks sit below
exports in okc's layers; ``okc.exports`` uses it to verify what it writes.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor, nn

from okc.errors import ConfigError, OkcError, ParamError, did_you_mean
from okc.models.model import TASK_PARAMS
from okc.registry import TASKS
from okc.tasks.base import BaseTask, Batch, TaskParams

_ORT_DTYPES = {
    "tensor(float)": torch.float32, "tensor(float16)": torch.float16,
    "tensor(double)": torch.float64, "tensor(bfloat16)": torch.bfloat16,
    "tensor(int64)": torch.int64, "tensor(int32)": torch.int32, "tensor(uint8)": torch.uint8,
    "tensor(bool)": torch.bool,
}  # fmt: skip
_PLACEHOLDER = re.compile(r"^<[^<>]+>$")


def choose_providers(requested: Sequence[str] | None) -> list[str]:
    """The requested providers this onnxruntime has (warning about the others), else all."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if not requested:
        return available
    chosen = [p for p in requested if p in available]
    missing = [p for p in requested if p not in available]
    if missing:
        fallback = chosen or available
        warnings.warn(
            f"providers: {', '.join(missing)} not available in this onnxruntime (it has "
            f"{', '.join(available)}); running on {', '.join(fallback)}",
            stacklevel=3,
        )
    return chosen or available


class OnnxModel:
    """An ONNX file on onnxruntime, called like the torch module it came from."""

    def __init__(self, path: str | Path, *, providers: Sequence[str] | None = None) -> None:
        import onnxruntime as ort

        path = Path(path).expanduser()
        if not path.is_file():
            raise OkcError(f"ONNX model not found: {path}")
        self.path = path
        self.providers = choose_providers(providers)
        try:
            self.session = ort.InferenceSession(str(path), providers=self.providers)
        except Exception as err:  # onnxruntime raises its own exception types
            raise OkcError(f"{path} is not a model onnxruntime can load: {err}") from err
        self.inputs = self.session.get_inputs()
        self.input_names = [i.name for i in self.inputs]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def input_dtype(self, name: str) -> torch.dtype | None:
        kind = next(i.type for i in self.inputs if i.name == name)
        return _ORT_DTYPES.get(kind)

    def input_shape(self, name: str) -> list[int | str | None]:
        return list(next(i.shape for i in self.inputs if i.name == name))

    def run(self, feed: Mapping[str, Tensor | np.ndarray]) -> dict[str, Tensor]:
        """Outputs by name, as CPU tensors."""
        arrays = {
            name: x.detach().cpu().numpy() if isinstance(x, Tensor) else x
            for name, x in feed.items()
        }
        outputs = self.session.run(self.output_names, arrays)
        return {n: torch.from_numpy(np.asarray(o)) for n, o in zip(self.output_names, outputs,
                                                                   strict=True)}  # fmt: skip

    def __call__(self, *inputs: Tensor | np.ndarray) -> Tensor | tuple[Tensor, ...]:
        out = self.run(dict(zip(self.input_names, inputs, strict=True)))
        values = tuple(out[n] for n in self.output_names)
        return values[0] if len(values) == 1 else values


def _shape_text(shape: Sequence[Any]) -> str:
    return "(" + ", ".join(str(d) if d is not None else "?" for d in shape) + ")"


def _file_problem(path: str) -> str | None:
    """Why ``path`` cannot be the exported model (a placeholder, no such file), or None."""
    if Path(path).expanduser().is_file():
        return None
    if _PLACEHOLDER.match(path):
        return (f"{path} is a placeholder: set it to your .onnx file (e.g. one okc export or "
                "CheckpointONNX wrote)")  # fmt: skip
    return f"file not found: {path}"


@TASKS.register
class ONNXTask(BaseTask):
    """Evaluates an exported model; has no weights of its own (they are in the ONNX file)."""

    @attrs.frozen(kw_only=True)
    class Params(TaskParams):
        path_to_onnx: str
        providers: tuple[str, ...] | None = None
        keys_mapping_onnx2dataset: dict[str, str] | None = None

        def __attrs_post_init__(self) -> None:
            problem = _file_problem(self.path_to_onnx)
            if problem:
                raise ParamError("path_to_onnx", problem)

    def __init__(self, params: Any = None, /, **keys: Any) -> None:
        super().__init__(params, **keys)
        self.runner = OnnxModel(self.params.path_to_onnx, providers=self.params.providers)
        names = self.runner.input_names
        mapping = self.params.keys_mapping_onnx2dataset
        where = "keys_mapping_onnx2dataset"
        if mapping is None and len(names) != 1:
            raise ConfigError(where, f"the model has inputs {names}: map each to a batch key")
        self.mapping = dict(mapping) if mapping is not None else {names[0]: self.input_key}
        for name in self.mapping:
            if name not in names:
                hint = did_you_mean(name, names) or f"; its inputs: {names}"
                raise ConfigError(f"{where}.{name}", f"the ONNX model has no input '{name}'{hint}")
        unmapped = [n for n in names if n not in self.mapping]
        if unmapped:
            raise ConfigError(where, f"the ONNX model's inputs {unmapped} are not mapped to batch "
                              "keys")  # fmt: skip
        self.output_keys = (*self.runner.output_names, "target")  # type: ignore[misc]
        self.model = nn.Module()  # no weights: checkpoints have nothing to hold

    @classmethod
    def declared_outputs(cls, params: Mapping[str, Any]) -> tuple[str, ...]:
        """The ONNX file's output names (read from the file), plus ``target``."""
        import onnx

        try:
            path = Path(params["path_to_onnx"]).expanduser()
            graph = onnx.load(str(path), load_external_data=False).graph
        except Exception:  # no such file, not an ONNX file: its params' errors say so
            return ()
        return (*(o.name for o in graph.output), "target")

    def _input(self, name: str, batch: Batch) -> Tensor:
        key = self.mapping[name]
        if key not in batch:
            raise ConfigError(f"{TASK_PARAMS}.keys_mapping_onnx2dataset.{name}",
                              f"the batch has no '{key}'; it has {sorted(batch)}")  # fmt: skip
        x = batch[key]
        expected = self.runner.input_shape(name)
        fits = len(expected) == x.dim() and all(
            not isinstance(d, int) or d == n for d, n in zip(expected, x.shape, strict=True)
        )
        if not fits:
            raise ConfigError(
                f"{TASK_PARAMS}.keys_mapping_onnx2dataset.{name}",
                f"the ONNX model's input '{name}' has shape {_shape_text(expected)}, batch key "
                f"'{key}' has {_shape_text(tuple(x.shape))}; make the data match (e.g. Resize in "
                "the dataset's transform)",
            )
        dtype = self.runner.input_dtype(name)
        return x.to(dtype) if dtype is not None else x

    def forward_with_gt(self, batch: Batch) -> dict[str, Tensor]:
        feed = {name: self._input(name, batch) for name in self.runner.input_names}
        device = next(iter(feed.values())).device
        out: dict[str, Tensor] = {k: v.to(device) for k, v in self.runner.run(feed).items()}
        if "target" in batch:
            out["target"] = batch["target"]
        return out

    def forward(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        return self.runner(*inputs)


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """``torch.jit.load`` on the CPU (torch.jit is deprecated upstream: its notice is hidden)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


@TASKS.register
class TorchScriptTask(BaseTask):
    """Evaluates a TorchScript file: ``path_to_model``; ``input_keys``, the batch keys passed as
    its positional inputs (default ``[image]``); ``output_names``, the names of its outputs (a
    tensor or a tuple of them) for metric mappings (default ``[output]``, what ``okc export``'s
    ONNX file calls it). The file's weights are its own: checkpoints have nothing to hold."""

    @attrs.frozen(kw_only=True)
    class Params(TaskParams):
        path_to_model: str
        input_keys: tuple[str, ...] = ("image",)
        output_names: tuple[str, ...] = ("output",)

        def __attrs_post_init__(self) -> None:
            if not Path(self.path_to_model).expanduser().is_file():
                raise ParamError("path_to_model", f"file not found: {self.path_to_model}")

    def __init__(self, params: Any = None, /, **keys: Any) -> None:
        super().__init__(params, **keys)
        try:
            self.scripted = load_torchscript(Path(self.params.path_to_model).expanduser())
        except RuntimeError as err:
            raise ConfigError("path_to_model", f"not a TorchScript file: {err}") from err
        self.input_keys = list(self.params.input_keys)
        self.output_names = list(self.params.output_names)
        self.output_keys = (*self.output_names, "target")  # type: ignore[misc]
        self.model = nn.Module()  # no weights of its own to checkpoint

    @classmethod
    def declared_outputs(cls, params: Mapping[str, Any]) -> tuple[str, ...]:
        return (*params.get("output_names", ("output",)), "target")

    def forward_with_gt(self, batch: Batch) -> dict[str, Tensor]:
        missing = [k for k in self.input_keys if k not in batch]
        if missing:
            raise ConfigError(f"{TASK_PARAMS}.input_keys",
                              f"the batch has no {missing}; it has {sorted(batch)}")  # fmt: skip
        result = self.scripted(*(batch[k] for k in self.input_keys))
        values = result if isinstance(result, (tuple, list)) else (result,)
        if len(values) != len(self.output_names):
            raise ConfigError(f"{TASK_PARAMS}.output_names",
                              f"the model returns {len(values)} outputs, output_names names "
                              f"{len(self.output_names)}")  # fmt: skip
        out = dict(zip(self.output_names, values, strict=True))
        if "target" in batch:
            out["target"] = batch["target"]
        return out

    def forward(self, *inputs: Tensor) -> Any:
        return self.scripted(*inputs)
