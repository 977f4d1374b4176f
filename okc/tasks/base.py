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
- ``check_params(params, path=...)``: problems in ``task.params`` found without building.

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
from typing import Any, ClassVar

import attrs
import torch
from torch import Tensor, nn

from okc.config.bind import check_params
from okc.errors import ConfigError
from okc.tasks.predictions import PredictionWriter

Batch = Mapping[str, Tensor]

_DTYPES = {
    "float32": torch.float32, "float": torch.float32, "float16": torch.float16,
    "half": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
    "uint8": torch.uint8, "int64": torch.int64, "long": torch.int64,
}  # fmt: skip


@attrs.frozen
class InputSpec:
    """One model input (TorchOk's ``task.params.inputs`` item): shape without the batch dim."""

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32

    def example(self, batch_size: int = 2) -> Tensor:
        return torch.rand(batch_size, *self.shape).to(self.dtype)


def parse_inputs(inputs: Sequence[Mapping[str, Any]] | None, *, path: str) -> list[InputSpec]:
    specs = []
    for i, item in enumerate(inputs or ()):
        where = f"{path}.{i}"
        shape = item.get("shape") if isinstance(item, Mapping) else None
        if not isinstance(shape, (list, tuple)) or not all(
            isinstance(s, int) and s > 0 for s in shape
        ):
            raise ConfigError(f"{where}.shape", f"expected a list of positive ints, got {shape!r}")
        dtype = item.get("dtype", "float32")
        if dtype not in _DTYPES:
            raise ConfigError(f"{where}.dtype", f"expected one of {sorted(_DTYPES)}, got {dtype!r}")
        specs.append(InputSpec(tuple(shape), _DTYPES[dtype]))
    return specs


class BaseTask(nn.Module):
    """Base of every task: the model, the output-dict contract, export inputs."""

    #: the keys ``forward_with_gt`` produces (those that depend on the batch may be absent)
    output_keys: ClassVar[tuple[str, ...]] = ()
    #: batch keys the task reads
    input_key: ClassVar[str] = "image"
    #: the names export gives ``forward``'s outputs, in order (a multi-head task: one per head)
    output_names: Sequence[str] = ("output",)

    def __init__(self, *, inputs: Sequence[Mapping[str, Any]] | None = None) -> None:
        super().__init__()
        self.inputs = parse_inputs(inputs, path="task.params.inputs")
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
                "task.params.inputs",
                "export needs the input shape: set e.g. inputs: [{shape: [3, 224, 224], "
                "dtype: float32}]",
            )
        return tuple(spec.example(batch_size) for spec in self.inputs)

    @classmethod
    def check_params(cls, params: Mapping[str, Any], *, path: str) -> list[ConfigError]:
        """Problems in ``task.params`` found without building the task."""
        return check_params(cls, params, path=path)
