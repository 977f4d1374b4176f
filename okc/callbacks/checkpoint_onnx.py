"""``CheckpointONNX``: ``ModelCheckpoint`` that also writes an ONNX file beside every checkpoint
(``epoch=3-step=400.onnx`` beside ``epoch=3-step=400.ckpt``, ``last.onnx`` beside ``last.ckpt``);
an ONNX file leaves with its checkpoint when that falls out of the top k.

TorchOk's parameters: every ``ModelCheckpoint`` one, plus ``onnx_params`` (``torch.onnx.export``
options: ``opset_version``, ``input_names``, ``output_names``, ``dynamic_axes``, ``export_params``,
``verbose``) and ``remove_head`` (export the model without its head: what it gives is the
pooled embedding, for retrieval models). The example input comes from ``task.params.inputs``;
the batch dimension is dynamic. Each file is run on onnxruntime against PyTorch once written
(``okc export``'s check). TorchOk's callback wrote ONNX files only; okc writes both, so the
``.ckpt`` files stay resumable.

``ModelCheckpointWithOnnx``, its older name, still works with a deprecation warning, as does its
``export_to_onnx`` switch (false: checkpoints only).
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from okc.callbacks.model_checkpoint import ModelCheckpoint
from okc.engine.hooks import RunView
from okc.errors import ConfigError, ParamError, did_you_mean
from okc.exports.onnx import ONNX_OPTIONS, export_verified_onnx
from okc.registry import CALLBACKS


def with_parent_params(cls: type) -> type:
    """Give ``cls`` the full keyword signature (its parent's parameters plus its own), which
    ``okc check`` binds config params against: its ``__init__`` passes the parent's on as
    ``**params``, which would otherwise accept any key, typos included."""
    parent = inspect.signature(cls.__mro__[1])
    own = [p for p in inspect.signature(cls.__init__).parameters.values()
           if p.kind is p.KEYWORD_ONLY]  # fmt: skip
    cls.__signature__ = parent.replace(parameters=[*parent.parameters.values(), *own])
    return cls


class Headless(nn.Module):
    """The model up to its head: ``forward_features`` (the pooled embedding)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_features(x)


@CALLBACKS.register
@with_parent_params
class CheckpointONNX(ModelCheckpoint):
    def __init__(
        self,
        *,
        onnx_params: Mapping[str, Any] | None = None,
        remove_head: bool = False,
        **checkpoint_params: Any,
    ) -> None:
        problems = self.param_problems({"onnx_params": onnx_params})
        if problems:
            raise problems[0]
        super().__init__(**checkpoint_params)
        self.onnx_params = dict(onnx_params or {})
        self.remove_head = remove_head
        self.export_onnx = True

    @classmethod
    def param_problems(cls, params: Mapping[str, Any]) -> list[ParamError]:
        """``okc check``: onnx_params keys the exporter does not take."""
        options = params.get("onnx_params") or {}
        return [
            ParamError(
                f"onnx_params.{key}",
                "okc exports with torch.onnx.export(dynamo=True), which takes "
                + ", ".join(ONNX_OPTIONS)
                + did_you_mean(key, ONNX_OPTIONS),
            )
            for key in (options if isinstance(options, Mapping) else ())
            if key not in ONNX_OPTIONS
        ]

    def setup(self, run: RunView, stage: str) -> None:
        super().setup(run, stage)
        if stage == "fit" and self.export_onnx:
            self._example(run)  # fail now, not at the first save, when inputs are missing
            if self.remove_head and not hasattr(run.model, "forward_features"):
                raise ConfigError(f"{self.config_path}.remove_head",
                                  f"{type(run.model).__name__} has no head to remove")  # fmt: skip

    def _example(self, run: RunView) -> tuple[Tensor, ...]:
        try:
            return tuple(run.task.example_inputs(batch_size=2))
        except ConfigError as err:
            raise ConfigError(
                f"{self.config_path}.onnx_params", f"CheckpointONNX needs the input shape: {err}"
            ) from err

    def _write(self, run: RunView, path: Path, *, weights_only: bool) -> None:
        super()._write(run, path, weights_only=weights_only)
        if self.export_onnx and run.is_main:
            self._export(run, path.with_suffix(".onnx"))

    def _remove(self, path: Path) -> None:
        super()._remove(path)
        path.with_suffix(".onnx").unlink(missing_ok=True)

    def _export(self, run: RunView, path: Path) -> None:
        """A copy of the model on the CPU in eval mode, so training is not disturbed."""
        source = Headless(run.model) if self.remove_head else run.task
        module = copy.deepcopy(source).to("cpu").eval()
        with torch.no_grad():
            names = {} if self.remove_head else {"output_names": run.task.output_names}
            export_verified_onnx(module, self._example(run), path, **{**names, **self.onnx_params})


@CALLBACKS.register
@with_parent_params
class ModelCheckpointWithOnnx(CheckpointONNX):
    """TorchOk's name until late 2022, with its ``export_to_onnx`` switch."""

    def __init__(self, *, export_to_onnx: bool = True, **params: Any) -> None:
        warnings.warn(
            "ModelCheckpointWithOnnx is CheckpointONNX's old name (TorchOk renamed it); use "
            "CheckpointONNX",
            FutureWarning,  # shown to users by default, unlike DeprecationWarning
            stacklevel=2,
        )
        super().__init__(**params)
        self.export_onnx = export_to_onnx
