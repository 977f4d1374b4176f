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
import cattrs
from torch import Tensor, nn

from okc.config.bind import build, check_params, raise_if, resolve
from okc.errors import ConfigError, did_you_mean
from okc.models import build_model, check_model_params
from okc.models.parts import input_kind
from okc.registry import HEADS, TASKS
from okc.tasks.base import BaseTask, Batch

# The model keys of ClassificationTask but the head's: the heads have their own list.
BODY_KEYS = ("backbone_name", "backbone_params", "neck_name", "neck_params",
             "pooling_name", "pooling_params")  # fmt: skip
HeadKind = Literal["multiclass", "multilabel", "embedding"]


@attrs.frozen
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


_CONVERTER = cattrs.Converter(forbid_extra_keys=True)


def parse_heads(heads: Any, *, path: str) -> tuple[dict[int, HeadSpec], list[ConfigError]]:
    """The well-formed items of ``heads`` by position, and every problem with its key path."""
    if not isinstance(heads, Sequence) or isinstance(heads, str) or not heads:
        return {}, [ConfigError(path, f"expected a non-empty list of heads, got {heads!r}")]
    specs: dict[int, HeadSpec] = {}
    errors: list[ConfigError] = []
    for i, item in enumerate(heads):
        try:
            spec = _CONVERTER.structure(item, HeadSpec)
        except Exception as err:  # cattrs' grouped errors: one line per problem, with its key
            errors += _head_errors(err, item, f"{path}.{i}")
            continue
        if spec.name in [s.name for s in specs.values()]:
            errors.append(ConfigError(f"{path}.{i}.name", f"head name '{spec.name}' is repeated"))
        specs[i] = spec
    return specs, errors


def _head_errors(err: Exception, item: Any, where: str) -> list[ConfigError]:
    if not isinstance(item, Mapping):
        return [ConfigError(where, f"expected {{type, name, target, params}}, got {item!r}")]
    fields = [f.name for f in attrs.fields(HeadSpec)]
    errors = [
        ConfigError(f"{where}.{key}", f"unknown key{did_you_mean(str(key), fields)}")
        for key in item
        if key not in fields
    ]
    errors += [ConfigError(where, f"needs '{f}', which is not set")
               for f in ("type", "name", "target") if f not in item]  # fmt: skip
    messages = (
        cattrs.transform_error(err, path="") if isinstance(err, cattrs.BaseValidationError) else []
    )
    errors += [ConfigError(where, m) for m in messages if not errors]
    return errors or [ConfigError(where, str(err))]


def check_heads(heads: Any, params: Mapping[str, Any], *, path: str) -> list[ConfigError]:
    """Each head resolves, its params bind (``in_channels`` is okc's), and it fits the pooling."""
    specs, errors = parse_heads(heads, path=f"{path}.heads")
    pooled = params.get("pooling_name") is not None
    for i, spec in specs.items():
        where = f"{path}.heads.{i}"
        try:
            target = resolve(HEADS, spec.type, path=f"{where}.type")
        except ConfigError as err:
            errors.append(err)
            continue
        errors += check_params(
            target, spec.params, path=f"{where}.params", injected=("in_channels",)
        )
        kind = input_kind(target)
        if (kind == "map" and pooled) or (kind == "vector" and not pooled):
            takes = "a feature map (N, C, H, W)" if kind == "map" else "a pooled embedding (N, C)"
            gets = "pooled vectors" if pooled else "the neck's map (no pooling_name is set)"
            errors.append(
                ConfigError(f"{where}.type", f"{spec.type} takes {takes}, but gets {gets}")
            )
    return errors


@TASKS.register
class MultiHeadClassificationTask(BaseTask):
    """Several classification (or embedding) heads over one shared backbone → neck → pooling.

    Args:
        backbone_name ... pooling_params: the shared body, as for ``ClassificationTask``.
        heads: ``[{type, name, target, params}]`` (see the module docstring), plus okc's optional
            ``kind`` (multiclass, multilabel, embedding) for what ``okc predict`` writes.
        inputs: the export input (``[{shape: [3, H, W]}]``).
    """

    output_keys = ("embeddings",)  # plus prediction_<head>, target_<target>: see declared_outputs

    def __init__(
        self,
        *,
        backbone_name: str,
        heads: Sequence[Mapping[str, Any]],
        backbone_params: Mapping[str, Any] | None = None,
        neck_name: str | None = None,
        neck_params: Mapping[str, Any] | None = None,
        pooling_name: str | None = None,
        pooling_params: Mapping[str, Any] | None = None,
        inputs: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(inputs=inputs)
        body = {k: v for k, v in locals().items() if k in BODY_KEYS and v is not None}
        raise_if(check_heads(heads, body, path="task.params"))
        self.specs = list(parse_heads(heads, path="task.params.heads")[0].values())
        # One module holds the body and the heads, so checkpoints and FreezeUnfreeze see
        # ``backbone.*``, ``neck.*``, ``pooling.*`` and ``heads.<name>.*``.
        self.model = build_model(body, path="task.params")
        self.model.heads = nn.ModuleDict({
            spec.name: build(
                HEADS, spec.type, spec.params, name_path=f"task.params.heads.{i}.type",
                params_path=f"task.params.heads.{i}.params",
                in_channels=self.model.embedding_channels,
            )
            for i, spec in enumerate(self.specs)
        })  # fmt: skip
        self.output_names = tuple(spec.name for spec in self.specs)
        self.output_keys = self.declared_outputs({"heads": heads})  # type: ignore[misc]

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
        specs, errors = parse_heads(params.get("heads"), path="task.params.heads")
        if errors:
            return ()  # the heads' own errors are reported; mappings are checked at run time
        targets = dict.fromkeys(f"target_{s.target}" for s in specs.values())
        return ("embeddings", *(f"prediction_{s.name}" for s in specs.values()), *targets)

    @classmethod
    def check_params(cls, params: Mapping[str, Any], *, path: str) -> list[ConfigError]:
        errors = check_params(cls, params, path=path)
        body = {k: v for k, v in params.items() if k in BODY_KEYS}
        if "backbone_name" in body:
            errors += check_model_params(body, path=path)
        if "heads" in params:
            errors += check_heads(params["heads"], body, path=path)
        return errors
