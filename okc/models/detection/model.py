"""The detection model: backbone → (the last ``num_scales`` stages) → neck → head (dense or DETR).

Configs use TorchOk's keys (``backbone_name``/``backbone_params``, ``num_scales``,
``neck_name``/``neck_params`` from ``DETECTION_NECKS``, ``head_name``/``head_params`` from
``DETECTION_HEADS``) and never repeat channel counts or strides: okc passes the neck the chosen
stages' channels and strides (finest first), and the head the neck's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from torch import Tensor, nn

from okc.config.bind import construct, raise_if
from okc.config.convert import structure
from okc.config.params import problems
from okc.errors import ConfigError, at, under
from okc.models.detection.dense import DenseHead, Detections
from okc.models.model import check_model_params
from okc.models.parts import DeclaresLossKeys, MultiLevelNeck
from okc.registry import BACKBONES, DETECTION_HEADS, DETECTION_NECKS, Registry

MODEL_KEYS = (
    "backbone_name", "backbone_params", "num_scales", "neck_name", "neck_params", "head_name",
    "head_params",
)  # fmt: skip
#: what okc passes the neck and the head: the channels and strides of the maps they take
_SUPPLIED = ("in_channels", "in_strides")
_PIECES = {"neck": DETECTION_NECKS, "head": DETECTION_HEADS}


@attrs.frozen(kw_only=True, slots=False)
class DetectionKeys:
    """The detection model keys (TorchOk's). Structuring checks them all together: the backbone
    as every model's, the neck and head names resolve (did-you-mean) and their params bind (less
    what okc supplies), a ``neck_params`` without ``neck_name`` is an error. Errors are relative
    to these keys (``head_params.test_cfg.nms.type``)."""

    backbone_name: str
    backbone_params: dict[str, Any] = attrs.field(factory=dict)
    num_scales: int | None = None
    neck_name: str | None = None
    neck_params: dict[str, Any] = attrs.field(factory=dict)
    head_name: str
    head_params: dict[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        raise_if(self.problems())

    def problems(self) -> list[ConfigError]:
        errors = check_model_params(
            {"backbone_name": self.backbone_name, "backbone_params": self.backbone_params}
        )
        if self.num_scales is not None and self.num_scales < 1:
            errors.append(ConfigError("num_scales", f"expected an int >= 1, got {self.num_scales}"))
        if self.neck_name is not None:
            errors += self._piece_problems("neck")
        elif self.neck_params:
            errors.append(ConfigError("neck_params", "is set but neck_name is not"))
        return errors + self._piece_problems("head")

    def _piece_problems(self, piece: str) -> list[ConfigError]:
        try:
            with at(f"{piece}_name"):
                target = _PIECES[piece].get(getattr(self, f"{piece}_name"))
        except ConfigError as err:
            return [err]
        return under(
            f"{piece}_params", problems(target, getattr(self, f"{piece}_params"), _SUPPLIED)
        )


class DetectionModel(nn.Module):
    """``head(neck(backbone(x)[-num_scales:]))``; ``forward`` gives the dense decoded output."""

    def __init__(
        self, *, backbone: nn.Module, neck: nn.Module | None, head: DenseHead, num_scales: int
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.num_scales = num_scales

    def raw(self, x: Tensor) -> Any:
        """The head's per-level outputs."""
        features = list(self.backbone(x))[-self.num_scales :]
        if self.neck is not None:
            features = self.neck(features)
        return self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, 4 + C [+ 1]) boxes and scores of every prior, before NMS (see ``DenseHead``)."""
        return self.head.decode(self.raw(x), x.shape[-2:])

    def detections(self, raw: Any, image_size: Sequence[int]) -> Detections:
        return self.head.detections(self.head.decode(raw, image_size), self.head.level_sizes(raw))


def build_detection_model(keys: DetectionKeys | Mapping[str, Any]) -> DetectionModel:
    """The model ``keys`` describe (a mapping: its model keys, structured into ``DetectionKeys``,
    which checks them all). Errors are relative to the keys (``head_params.strides``)."""
    if not isinstance(keys, DetectionKeys):
        keys = structure({k: v for k, v in keys.items() if k in MODEL_KEYS}, DetectionKeys)
    backbone = _build(BACKBONES, keys, "backbone")
    stages = len(backbone.out_channels)
    num_scales = keys.num_scales or stages
    if num_scales > stages:
        raise ConfigError(
            "num_scales", f"{num_scales}, but {keys.backbone_name} has {stages} stages"
        )
    channels = list(backbone.out_channels[-num_scales:])
    strides = list(backbone.out_strides[-num_scales:])
    neck = None
    if keys.neck_name is not None:
        neck = _build(DETECTION_NECKS, keys, "neck", in_channels=channels, in_strides=strides)
        channels, strides = _neck_outputs(neck)
    if len(set(channels)) != 1:
        raise ConfigError(
            "neck_name",
            f"the detection head shares its convs across levels, but the levels have channels "
            f"{channels}; add a neck (e.g. FPN) that gives every level the same channels",
        )
    head = _build(DETECTION_HEADS, keys, "head", in_channels=channels[0], in_strides=strides)
    return DetectionModel(backbone=backbone, neck=neck, head=head, num_scales=num_scales)


def _build(registry: Registry, keys: DetectionKeys, piece: str, **supplied: Any) -> Any:
    target = registry.get(getattr(keys, f"{piece}_name"))
    with at(f"{piece}_params"):
        return construct(target, getattr(keys, f"{piece}_params"), **supplied)


def _neck_outputs(neck: nn.Module) -> tuple[list[int], list[int]]:
    """Channels and strides per output level of a neck (``out_channels``, ``out_strides``)."""
    if not isinstance(neck, MultiLevelNeck):
        raise ConfigError(
            "neck_name", f"{type(neck).__name__} must state out_channels and out_strides"
        )
    channels, strides = neck.out_channels, neck.out_strides
    if isinstance(channels, int):
        channels = [channels] * len(strides)
    return [int(c) for c in channels], [int(s) for s in strides]


def loss_keys(head_name: str | None) -> tuple[str, ...]:
    """The loss inputs head ``head_name`` produces (empty when the head is unknown)."""
    target = DETECTION_HEADS.find(head_name or "")
    return tuple(target.loss_keys) if isinstance(target, DeclaresLossKeys) else ()
