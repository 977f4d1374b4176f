"""MultiHeadClassificationTask: one backbone → neck → pooling, several heads, each with its target.

TorchOk's params, unchanged: ``heads`` is a list of ``{type, name, target, params}``: ``type`` a
registered head, ``name`` the head's output name, ``target`` the dataset's target it learns
(batch key ``target_<target>``), ``params`` the head's own (``in_channels`` comes from the
pooling). Two heads may share one target.

Unlike TorchOk, the neck is used (TorchOk built it and skipped it in ``forward``), and the task
exports: ``forward(x)`` returns one tensor per head, in the order of ``heads``, and ONNX/pt2 files
name each output after its head (``output_names``).

An optional boolean ``condition_<target>`` (B,) in the batch says which rows have that target
(``MultiHeadImageDataset`` sets it where the CSV cell is empty): the heads of that target then see
only those rows, so their loss and metrics see only those rows.

Output keys of ``forward_with_gt`` (head ``h`` with target ``t``):

- ``embeddings``: (B, D) the pooled features all heads share;
- ``prediction_<h>``: (b, C_h) the head's output on the rows of ``condition_<t>`` (all B without);
- ``target_<t>``: the batch's ``target_<t>`` on the same rows, when the batch has it.

``okc predict`` writes ``prediction_<h>`` per head: the class id (the multi-hot decision at 0.5
for a ``multilabel`` head) or the head's vector for an ``embedding`` head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
from torch import Tensor, nn

from okc.config.bind import construct
from okc.config.convert import structure
from okc.config.params import problems
from okc.errors import ConfigError, ConfigErrors, at, under
from okc.models.model import BodyKeys, build_model, fit_problem
from okc.registry import HEADS, TASKS
from okc.tasks.base import BaseTask, Batch, TaskParams

HeadKind = Literal["multiclass", "multilabel", "embedding"]


@attrs.frozen(kw_only=True)
class HeadSpec:
    """One item of ``heads`` (TorchOk's keys), plus okc's ``kind`` for ``okc predict``.

    ``kind`` says how ``okc predict`` decodes the head: ``multiclass`` (argmax, default),
    ``multilabel`` (sigmoid > 0.5) or ``embedding`` (the vector as is).
    """

    type: str
    name: str
    target: str
    params: dict[str, Any] = attrs.field(factory=dict)
    kind: HeadKind = "multiclass"

    def __attrs_post_init__(self) -> None:
        with at("type"):
            HEADS.get(self.type)


@TASKS.register
class MultiHeadClassificationTask(BaseTask):
    """Several classification (or embedding) heads over one shared backbone → neck → pooling.

    Params: the shared body (``backbone_*``, ``neck_*``, ``pooling_*``), as for
    ``ClassificationTask``; ``heads``, ``[{type, name, target, params}]`` (see the module
    docstring) plus okc's optional ``kind`` (multiclass, multilabel, embedding) for what
    ``okc predict`` writes; ``inputs``, the export input (``[{shape: [3, H, W]}]``).
    """

    output_keys = ("embeddings",)  # plus prediction_<head>, target_<target>: see declared_outputs

    @attrs.frozen(kw_only=True)
    class Params(BodyKeys, TaskParams):
        heads: tuple[HeadSpec, ...]

        def problems(self) -> list[ConfigError]:
            """Each head's params bind (``in_channels`` is okc's), names are unique, and each
            head fits the pooling (or its absence)."""
            errors = super().problems()
            if not self.heads:
                errors.append(ConfigError("heads", "expected a non-empty list of heads"))
            names = [spec.name for spec in self.heads]
            for i, spec in enumerate(self.heads):
                head = HEADS.get(spec.type)
                errors += under(f"heads.{i}.params", problems(head, spec.params, ("in_channels",)))
                if spec.name in names[:i]:
                    errors.append(ConfigError(f"heads.{i}.name",
                                              f"head name '{spec.name}' is repeated"))  # fmt: skip
                misfit = fit_problem(spec.type, head, self.pooling_name)
                if misfit is not None:
                    errors.append(ConfigError(f"heads.{i}.type", misfit))
            return errors

    def __init__(self, params: Any = None, /, **keys: Any) -> None:
        super().__init__(params, **keys)
        self.specs = list(self.params.heads)
        # One module holds the body and the heads, so checkpoints and FreezeUnfreeze see
        # ``backbone.*``, ``neck.*``, ``pooling.*`` and ``heads.<name>.*``.
        self.model = build_model(self.params)
        heads = {}
        for i, spec in enumerate(self.specs):
            with at(f"heads.{i}.params"):
                heads[spec.name] = construct(HEADS.get(spec.type), spec.params,
                                             in_channels=self.model.embedding_channels)  # fmt: skip
        self.model.heads = nn.ModuleDict(heads)
        self.output_names = tuple(spec.name for spec in self.specs)
        self.output_keys = self._outputs(self.specs)  # type: ignore[misc]

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """One output per head, in the order of ``heads`` (what export names ``output_names``)."""
        features = self.model.forward_features(x)
        return tuple(self.model.heads[name](features) for name in self.output_names)

    def forward_with_gt(self, batch: Batch) -> dict[str, Tensor]:
        features = self.model.forward_features(batch[self.input_key])
        out = {"embeddings": features}
        for spec in self.specs:
            target = batch.get(f"target_{spec.target}")
            condition = batch.get(f"condition_{spec.target}")
            rows = features
            if condition is not None:  # data-dependent rows: a graph break under compile
                keep = condition.bool()  # 0/1 ints would index rows 0 and 1 instead
                rows = features[keep]
                target = None if target is None else target[keep]
            out[f"prediction_{spec.name}"] = self.model.heads[spec.name](rows, target)
            if target is not None:
                out[f"target_{spec.target}"] = target
        return out

    def predict_outputs(self, outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        decoded = {}
        for spec in self.specs:
            value = outputs[f"prediction_{spec.name}"].float()
            if spec.kind == "multiclass":
                value = value.argmax(dim=-1)
            elif spec.kind == "multilabel":
                value = (value.sigmoid() > 0.5).long()
            decoded[f"prediction_{spec.name}"] = value
        return decoded

    @classmethod
    def declared_outputs(cls, params: Mapping[str, Any]) -> tuple[str, ...]:
        try:
            return cls._outputs(structure(params.get("heads"), tuple[HeadSpec, ...]))
        except ConfigErrors:
            return ()  # the heads' own errors are reported; mappings are checked at run time

    @staticmethod
    def _outputs(specs: Sequence[HeadSpec]) -> tuple[str, ...]:
        targets = dict.fromkeys(f"target_{s.target}" for s in specs)
        return ("embeddings", *(f"prediction_{s.name}" for s in specs), *targets)
