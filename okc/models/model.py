"""The composite model: backbone → neck → pooling → head, each piece sized from the one before.

Configs name the pieces with TorchOk's keys (``backbone_name``/``backbone_params``, ``neck_*``,
``pooling_*``, ``head_*``) and never repeat a channel count: okc passes each piece the previous
piece's ``out_channels`` (and a neck the backbone's strides), so setting ``in_channels`` on a neck,
pooling or head is an error. Everything checkable without building is checked first, together.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import attrs
import torch
from cattrs.errors import ClassValidationError
from torch import nn

from okc.config.bind import construct
from okc.config.convert import structure
from okc.config.params import problems
from okc.errors import ConfigError, ConfigErrors, at, under
from okc.models.necks.last_stage import LastStage
from okc.models.parts import ChecksParams, StatesInChannels, input_kind, takes_image_size
from okc.registry import BACKBONES, HEADS, NECKS, POOLINGS, Registry

PIECES: dict[str, Registry] = {
    "backbone": BACKBONES,
    "neck": NECKS,
    "pooling": POOLINGS,
    "head": HEADS,
}
MODEL_KEYS = tuple(f"{piece}_{part}" for piece in PIECES for part in ("name", "params"))
#: where a task's params sit in an experiment: errors found while running name their keys there
TASK_PARAMS = "task.params"
# What okc passes each piece; a piece gets the ones its signature accepts.
_SUPPLIED = {
    "backbone": (),
    "neck": ("in_channels", "in_strides"),
    "pooling": ("in_channels",),
    "head": ("in_channels",),
}


@attrs.frozen(kw_only=True, slots=False)
class BodyKeys:
    """The keys of a model's body (TorchOk's): backbone, neck and pooling, each a registered name
    and its params. Structuring checks them all together: names resolve (did-you-mean), params
    bind to each piece (less what okc supplies), a ``*_params`` without its name is an error.

    Task params inherit this class (or ``ModelKeys``), so TorchOk's flat keys stay flat; a
    subclass adds its own cross-field rules by extending ``problems``.
    """

    backbone_name: str
    backbone_params: dict[str, Any] = attrs.field(factory=dict)
    neck_name: str | None = None
    neck_params: dict[str, Any] = attrs.field(factory=dict)
    pooling_name: str | None = None
    pooling_params: dict[str, Any] = attrs.field(factory=dict)

    pieces: ClassVar[tuple[str, ...]] = ("backbone", "neck", "pooling")

    def __attrs_post_init__(self) -> None:
        errors = self.problems()
        if errors:  # cattrs' group of one class's errors: the converter places each at its key
            raise ClassValidationError(type(self).__name__, errors, type(self))

    def problems(self) -> list[ConfigError]:
        """Every problem found without building anything heavy (relative to these keys)."""
        return [e for piece in self.pieces for e in self._piece_problems(piece)]

    def target(self, piece: str) -> Callable[..., Any] | None:
        """The registered class or factory of ``piece`` (None when unset or unknown)."""
        name = getattr(self, f"{piece}_name", None)  # BodyKeys has no head
        return PIECES[piece].find(name) if name is not None else None

    def _piece_problems(self, piece: str) -> list[ConfigError]:
        name, params = getattr(self, f"{piece}_name"), getattr(self, f"{piece}_params")
        if name is None:
            unused = [ConfigError(f"{piece}_params", f"is set but {piece}_name is not")]
            return unused if params else []
        try:
            with at(f"{piece}_name"):
                target = PIECES[piece].get(name)
        except ConfigError as err:
            return [err]
        errors = problems(target, params, _supplied(piece, target))
        if not errors and isinstance(target, ChecksParams):  # timm's open signature
            errors = [ConfigError(p.key, p.message) for p in target.param_problems(params)]
        return under(f"{piece}_params", errors)


@attrs.frozen(kw_only=True, slots=False)
class ModelKeys(BodyKeys):
    """The model keys of every task: the body's plus the head's, which must fit what comes
    before it (a head that takes a map after a pooling, or a pooled vector with no pooling)."""

    head_name: str | None = None
    head_params: dict[str, Any] = attrs.field(factory=dict)

    pieces: ClassVar[tuple[str, ...]] = ("backbone", "neck", "pooling", "head")

    def problems(self) -> list[ConfigError]:
        errors = super().problems()
        misfit = fit_problem(self.head_name, self.target("head"), self.pooling_name)
        if misfit is not None:
            errors.append(ConfigError("pooling_name" if self.pooling_name else "head_name", misfit))
        return errors


def fit_problem(head: str | None, target: object, pooling: str | None) -> str | None:
    """Why head ``head`` (its class ``target``) does not fit after ``pooling``, or None."""
    kind = input_kind(target)
    if kind == "map" and pooling is not None:
        return (
            f"{head} takes a feature map (N, C, H, W), but pooling '{pooling}' turns the map "
            "into one vector per image; remove pooling_name"
        )
    if kind == "vector" and pooling is None:
        return (
            f"{head} takes a pooled embedding (N, C), but no pooling is set and the "
            "neck/backbone gives a map (N, C, H, W); set pooling_name (e.g. Pooling)"
        )
    return None


class Model(nn.Module):
    """``head(pooling(neck(backbone(x))), target)``; no neck means the backbone's last stage.

    ``forward_features`` gives what the head takes: the pooled embedding, or with no pooling the
    neck's map. ``embedding_channels`` is its channel count.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        neck: nn.Module | None = None,
        pooling: nn.Module | None = None,
        head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        if neck is None:
            neck = LastStage(in_channels=backbone.out_channels, in_strides=backbone.out_strides)
        self.neck = neck
        self.pooling = pooling
        self.head = head
        # A user backbone that does not state in_channels gets no input check.
        self.in_channels = backbone.in_channels if isinstance(backbone, StatesInChannels) else None
        self.embedding_channels = int((pooling or self.neck).out_channels)
        self.head_needs_image_size = takes_image_size(head)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x), target, image_size=x.shape[-2:])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing():  # tracing sees shapes as tensors and would warn
            self._check_input(x)
        features = self.neck(self.backbone(x))
        return features if self.pooling is None else self.pooling(features)

    def forward_head(
        self,
        features: torch.Tensor,
        target: torch.Tensor | None = None,
        *,
        image_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """The head on ``forward_features``' output; a task that logs embeddings calls both."""
        if self.head is None:
            return features
        if self.head_needs_image_size:
            return self.head(features, target, image_size=image_size)
        return self.head(features, target)

    def _check_input(self, x: torch.Tensor) -> None:
        """A config-level error instead of a conv's shape error deep inside the backbone.

        Shapes are static under compile and export, so this adds nothing to their graphs.
        """
        if x.ndim == 4 and (self.in_channels is None or x.shape[1] == self.in_channels):
            return
        raise ConfigError(
            f"{TASK_PARAMS}.backbone_params.in_channels",
            f"the model takes images of shape (N, {self.in_channels or 'C'}, H, W), got a batch "
            f"of shape {tuple(x.shape)}; set in_channels to the images' channel count or convert "
            "the images",
        )


def build_model(keys: BodyKeys | Mapping[str, Any]) -> Model:
    """The model ``keys`` describe (a mapping: its model keys, structured into ``ModelKeys``,
    which checks them all). Errors are relative to the keys (``head_params.num_classes``)."""
    if not isinstance(keys, BodyKeys):
        keys = structure({k: v for k, v in keys.items() if k in MODEL_KEYS}, ModelKeys)
    backbone = _build_piece(keys, "backbone")
    stages = {"in_channels": list(backbone.out_channels), "in_strides": list(backbone.out_strides)}
    neck = _build_piece(keys, "neck", **stages)
    channels = int(neck.out_channels if neck is not None else backbone.out_channels[-1])
    pooling = _build_piece(keys, "pooling", in_channels=channels)
    channels = int(pooling.out_channels if pooling is not None else channels)
    head = _build_piece(keys, "head", in_channels=channels)
    return Model(backbone=backbone, neck=neck, pooling=pooling, head=head)


def check_model_params(params: Mapping[str, Any]) -> list[ConfigError]:
    """Every problem in the model keys of ``params`` (other keys ignored), relative to them."""
    try:
        structure({k: v for k, v in params.items() if k in MODEL_KEYS}, ModelKeys)
    except ConfigErrors as err:
        return err.errors
    return []


def _build_piece(keys: BodyKeys, piece: str, **supplied: Any) -> Any:
    target = keys.target(piece)
    if target is None:
        return None
    with at(f"{piece}_params"):
        names = _supplied(piece, target)
        return construct(target, getattr(keys, f"{piece}_params"),
                         **{k: v for k, v in supplied.items() if k in names})  # fmt: skip


def _supplied(piece: str, target: Callable[..., Any]) -> tuple[str, ...]:
    """The arguments okc passes ``target``: those of ``_SUPPLIED[piece]`` it accepts."""
    parameters = inspect.signature(target).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return _SUPPLIED[piece]
    return tuple(n for n in _SUPPLIED[piece] if n in parameters)
