"""The task contract: what a batch becomes before losses and metrics see it.

A task owns the model (``task.model``: the weights a checkpoint stores, with keys ``backbone.*``,
``neck.*``, ``pooling.*``, ``head.*``) and maps a batch to a dict of named outputs with
``forward_with_gt``. Those names are the contract with the experiment: ``joint_loss`` and
``metrics`` ``mapping`` values refer to them. ``forward(x)`` is plain inference, what export
traces.

What the engine asks of a task (``BaseTask`` declares each with its default):

- ``model``: the module whose ``state_dict`` checkpoints hold;
- ``forward_with_gt(batch) -> dict``: the named outputs; ``output_keys`` lists them, and
  ``declared_outputs(params)`` gives them before building, for ``okc check``;
- ``forward(*inputs)``: inference on preprocessed inputs (export); ``example_inputs()`` makes them
  from ``task.params.inputs``;
- ``predict_outputs(outputs)`` and ``prediction_writer(path)``: what ``okc predict`` writes, how;
- ``Params``: the attrs class ``task.params`` is structured into (``okc check``'s check, with the
  cross-field rules in its ``__attrs_post_init__``); ``param_problems(params)`` lists its errors.
  A task is built as ``Task(params)`` from the instance, or from Python as ``Task(**keys)``.

The engine attaches ``task.losses`` (a JointLoss; ``task.losses['tag']`` is one loss) before
training.

Batches and outputs are trees: a value is a tensor, a list with one tensor per sample (the
dataset's ``ragged_keys``), or a list of per-sample dicts. Collate, device transfer, the
precision cast, losses, metrics and the prediction writer accept all of them. One example of each
kind of task (B samples, C classes):

- classification: batch ``image`` (B,3,H,W), ``target`` (B,) → ``embeddings`` (B,D),
  ``prediction`` (B,C), ``target``;
- segmentation: batch ``image``, ``mask`` (B,H,W) → ``prediction`` (B,C,H,W), ``target`` (B,H,W);
- metric learning (pairwise): batch ``image``, ``target`` (B,) → ``emb1``/``emb2`` (B,D) and ``R``
  (B,B) same-label matrix, ``target``; triplets read ``anchor``, ``positive``, ``negative`` images;
- detection: batch ``image``, ``bboxes`` (list of B (N_i,4) xyxy tensors), ``label`` (list of B
  (N_i,)) → the head's loss inputs (``flatten_cls_scores``, ``num_pos``, ...) plus ``prediction``
  and ``target`` as lists of B dicts ``{boxes, scores, labels}`` / ``{boxes, labels}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import attrs
import torch
from torch import Tensor, nn

from okc.config.params import given, problems
from okc.errors import ConfigError, ParamError
from okc.models.model import TASK_PARAMS
from okc.tasks.predictions import PredictionWriter

Batch = Mapping[str, Tensor]

_DTYPES = {
    "float32": torch.float32, "float": torch.float32, "float16": torch.float16,
    "half": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
    "uint8": torch.uint8, "int64": torch.int64, "long": torch.int64,
}  # fmt: skip


@attrs.frozen(kw_only=True)
class InputSpec:
    """One model input (TorchOk's ``task.params.inputs`` item): shape without the batch dim."""

    shape: tuple[int, ...]
    dtype: Literal["float32", "float", "float16", "half", "bfloat16", "float64", "uint8",
                   "int64", "long"] = "float32"  # fmt: skip

    def __attrs_post_init__(self) -> None:
        if not self.shape or min(self.shape) < 1:
            raise ParamError("shape", f"expected a list of positive ints, got {list(self.shape)}")

    def example(self, batch_size: int = 2) -> Tensor:
        return torch.rand(batch_size, *self.shape).to(_DTYPES[self.dtype])


@attrs.frozen(kw_only=True, slots=False)
class TaskParams:
    """What every task takes: ``inputs``, the export input shapes."""

    inputs: tuple[InputSpec, ...] = ()


class BaseTask(nn.Module):
    """Base of every task: the model, the output-dict contract, export inputs."""

    #: ``task.params``, structured: a task extends it (subclassing ``TaskParams`` and, for a
    #: model, ``okc.models.ModelKeys``) with its keys and cross-field rules
    Params: ClassVar[type] = TaskParams
    #: the keys ``forward_with_gt`` produces (those that depend on the batch may be absent)
    output_keys: ClassVar[tuple[str, ...]] = ()
    #: batch keys the task reads
    input_key: ClassVar[str] = "image"
    #: the names export gives ``forward``'s outputs, in order (a multi-head task: one per head)
    output_names: Sequence[str] = ("output",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Params" in cls.__dict__:  # errors name the task: "SegmentationTask needs 'head_name'"
            cls.Params.__okc_component__ = cls.__name__

    def __init__(self, params: Any = None, /, **keys: Any) -> None:
        """From the ``Params`` instance (what okc builds), or from its keys (Python), structured
        as a config's are; errors relative to the params."""
        super().__init__()
        self.params = given(type(self), params, keys)
        self.inputs: tuple[InputSpec, ...] = self.params.inputs
        self.model: nn.Module = nn.Identity()
        self.losses: nn.Module | None = None

    def forward(self, x: Tensor) -> Tensor:
        """Inference on a preprocessed image batch; what export traces."""
        raise NotImplementedError

    def forward_with_gt(self, batch: Batch) -> dict[str, Tensor]:
        """The named outputs losses and metrics map from (see ``output_keys``)."""
        raise NotImplementedError

    def predict_outputs(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """Per-sample values written by ``okc predict`` (default: every output)."""
        return dict(outputs)

    def prediction_writer(
        self, path: str | Path, *, rank: int = 0, world_size: int = 1
    ) -> PredictionWriter:
        """What ``okc predict`` writes with: CSV rows by default; tasks with file-like
        predictions (PNG masks, box files) return a subclass."""
        return PredictionWriter(path, rank=rank, world_size=world_size)

    @classmethod
    def declared_outputs(cls, params: Mapping[str, Any]) -> tuple[str, ...]:
        """The keys ``forward_with_gt`` will produce for ``params``, known before building (for
        ``okc check``); empty when they cannot be known, which defers the check to run time."""
        return cls.output_keys

    def example_inputs(self, batch_size: int = 2) -> tuple[Tensor, ...]:
        """Example inputs for export, from ``task.params.inputs``."""
        if not self.inputs:
            raise ConfigError(
                f"{TASK_PARAMS}.inputs",
                "export needs the input shape: set e.g. inputs: [{shape: [3, 224, 224], "
                "dtype: float32}]",
            )
        return tuple(spec.example(batch_size) for spec in self.inputs)

    @classmethod
    def param_problems(cls, params: Mapping[str, Any]) -> list[ConfigError]:
        """Problems in ``task.params`` found without building the task (relative to it)."""
        return problems(cls, params)
