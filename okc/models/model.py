"""The composite model: backbone → neck → pooling → head, each piece sized from the one before.

Configs name the pieces with TorchOk's keys (``backbone_name``/``backbone_params``, ``neck_*``,
``pooling_*``, ``head_*``) and never repeat a channel count: okc passes each piece the previous
piece's ``out_channels`` (and a neck the backbone's strides), so setting ``in_channels`` on a neck,
pooling or head is an error. Everything checkable without building is checked first, together.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from okc.config.bind import build, check_params, raise_if, resolve
from okc.errors import ConfigError
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
# What okc passes each piece; a piece gets the ones its signature accepts.
_SUPPLIED = {
    "backbone": (),
    "neck": ("in_channels", "in_strides"),
    "pooling": ("in_channels",),
    "head": ("in_channels",),
}


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
        input_key: str = "backbone_params.in_channels",
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
        self.input_key = input_key  # named in the error for images with the wrong channel count

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
            self.input_key,
            f"the model takes images of shape (N, {self.in_channels or 'C'}, H, W), got a batch "
            f"of shape {tuple(x.shape)}; set in_channels to the images' channel count or convert "
            "the images",
        )


def build_model(params: Mapping[str, Any], *, path: str = "task.params") -> Model:
    """Build the model a task's ``params`` describe; other keys in ``params`` are ignored.

    Raises ``ConfigErrors`` listing every problem ``check_model_params`` finds, or one
    ``ConfigError`` naming the key whose value a piece rejected while being built.
    """
    raise_if(check_model_params(params, path=path))
    backbone = _build_piece(params, "backbone", path=path)
    neck = None
    if params.get("neck_name") is not None:
        stages = {
            "in_channels": list(backbone.out_channels),
            "in_strides": list(backbone.out_strides),
        }
        neck = _build_piece(params, "neck", path=path, **stages)
    channels = neck.out_channels if neck is not None else backbone.out_channels[-1]
    pooling = None
    if params.get("pooling_name") is not None:
        pooling = _build_piece(params, "pooling", path=path, in_channels=int(channels))
        channels = pooling.out_channels
    head = None
    if params.get("head_name") is not None:
        head = _build_piece(params, "head", path=path, in_channels=int(channels))
    input_key = _key(path, "backbone_params.in_channels")
    return Model(backbone=backbone, neck=neck, pooling=pooling, head=head, input_key=input_key)


def check_model_params(
    params: Mapping[str, Any], *, path: str = "task.params"
) -> list[ConfigError]:
    """Every problem in the model keys of ``params`` found without building anything heavy.

    Names are looked up (did-you-mean on a miss), params are bound to signatures, backbone values
    that signatures cannot express are checked (``in_channels: 0``, a missing weights file), and
    the head must fit what comes before it (a map or a pooled vector).
    """
    errors: list[ConfigError] = []
    targets: dict[str, Callable[..., Any]] = {}
    for piece, registry in PIECES.items():
        name_key, params_key = f"{piece}_name", f"{piece}_params"
        name, piece_params = params.get(name_key), params.get(params_key)
        if piece_params is None:
            piece_params = {}
        elif not isinstance(piece_params, Mapping):
            errors.append(
                ConfigError(_key(path, params_key), f"expected a mapping, got {piece_params!r}")
            )
            piece_params = {}
        if name is None:
            if piece == "backbone":
                errors.append(ConfigError(path, "needs 'backbone_name', which is not set"))
            elif piece_params:
                errors.append(ConfigError(_key(path, params_key), f"is set but {name_key} is not"))
            continue
        if not isinstance(name, str):
            errors.append(ConfigError(_key(path, name_key), f"expected a name, got {name!r}"))
            continue
        try:
            target = resolve(registry, name, path=_key(path, name_key))
        except ConfigError as err:
            errors.append(err)
            continue
        targets[piece] = target
        params_path = _key(path, params_key)
        injected = _supplied(piece, target)
        errors += check_params(target, piece_params, path=params_path, injected=injected)
        if isinstance(target, ChecksParams):
            errors += [
                ConfigError(f"{params_path}.{p.key}", p.message)
                for p in target.param_problems(piece_params)
            ]
    return errors + _fit_problems(params, targets, path=path)


def _fit_problems(
    params: Mapping[str, Any], targets: Mapping[str, Callable[..., Any]], *, path: str
) -> list[ConfigError]:
    """A head that takes a map after a pooling, or one that takes a vector with no pooling."""
    kind = input_kind(targets.get("head"))
    head, pooling = params.get("head_name"), params.get("pooling_name")
    if kind == "map" and pooling is not None:
        return [
            ConfigError(
                _key(path, "pooling_name"),
                f"{head} takes a feature map (N, C, H, W), but pooling '{pooling}' turns the map "
                "into one vector per image; remove pooling_name",
            )
        ]
    if kind == "vector" and pooling is None:
        return [
            ConfigError(
                _key(path, "head_name"),
                f"{head} takes a pooled embedding (N, C), but no pooling is set and the "
                "neck/backbone gives a map (N, C, H, W); set pooling_name (e.g. Pooling)",
            )
        ]
    return []


def _build_piece(params: Mapping[str, Any], piece: str, *, path: str, **supplied: Any) -> Any:
    name = params[f"{piece}_name"]
    target = resolve(PIECES[piece], name, path=_key(path, f"{piece}_name"))
    return build(
        PIECES[piece], name, params.get(f"{piece}_params"),
        name_path=_key(path, f"{piece}_name"), params_path=_key(path, f"{piece}_params"),
        **{k: v for k, v in supplied.items() if k in _supplied(piece, target)},
    )  # fmt: skip


def _supplied(piece: str, target: Callable[..., Any]) -> tuple[str, ...]:
    """The arguments okc passes ``target``: those of ``_SUPPLIED[piece]`` it accepts."""
    parameters = inspect.signature(target).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return _SUPPLIED[piece]
    return tuple(n for n in _SUPPLIED[piece] if n in parameters)


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
