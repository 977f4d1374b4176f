"""The detection model: backbone → (the last ``num_scales`` stages) → neck → head (dense or DETR).

Configs use TorchOk's keys (``backbone_name``/``backbone_params``, ``num_scales``,
``neck_name``/``neck_params`` from ``DETECTION_NECKS``, ``head_name``/``head_params`` from
``DETECTION_HEADS``) and never repeat channel counts or strides: okc passes the neck the chosen
stages' channels and strides (finest first), and the head the neck's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from okc.config.bind import build, check_params, raise_if, resolve
from okc.errors import ConfigError
from okc.models.detection.dense import DenseHead, Detections
from okc.models.model import check_model_params
from okc.models.parts import ChecksParams, DeclaresLossKeys, MultiLevelNeck
from okc.registry import BACKBONES, DETECTION_HEADS, DETECTION_NECKS, Registry

MODEL_KEYS = (
    "backbone_name", "backbone_params", "num_scales", "neck_name", "neck_params", "head_name",
    "head_params",
)  # fmt: skip
_NECK_SUPPLIED = ("in_channels", "in_strides")
_HEAD_SUPPLIED = ("in_channels", "in_strides")

#: TorchOk heads okc does not build, and why (a clearer message than "unknown head").
NOT_AVAILABLE: dict[str, str] = {}


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


def check_detection_params(params: Mapping[str, Any], *, path: str) -> list[ConfigError]:
    """Problems in the model keys of ``params`` found without building anything."""
    backbone = {k: params[k] for k in ("backbone_name", "backbone_params") if k in params}
    errors = check_model_params(backbone, path=path)
    num_scales = params.get("num_scales")
    if num_scales is not None and (type(num_scales) is not int or num_scales < 1):
        errors.append(
            ConfigError(f"{path}.num_scales", f"expected an int >= 1, got {num_scales!r}")
        )
    if params.get("neck_name") is not None:
        errors += _check_piece(params, "neck", DETECTION_NECKS, _NECK_SUPPLIED, path)
    elif params.get("neck_params"):
        errors.append(ConfigError(f"{path}.neck_params", "is set but neck_name is not"))
    errors += _check_piece(params, "head", DETECTION_HEADS, _HEAD_SUPPLIED, path)
    return errors


def _check_piece(
    params: Mapping[str, Any], piece: str, registry: Registry, supplied: Sequence[str], path: str
) -> list[ConfigError]:
    name, piece_params = params.get(f"{piece}_name"), params.get(f"{piece}_params") or {}
    if not isinstance(piece_params, Mapping):
        return [ConfigError(f"{path}.{piece}_params", f"expected a mapping, got {piece_params!r}")]
    try:
        target = _resolve(registry, name, f"{path}.{piece}_name")
    except ConfigError as err:
        return [err]
    where = f"{path}.{piece}_params"
    errors = check_params(target, piece_params, path=where, injected=supplied)
    if isinstance(target, ChecksParams) and not errors:
        problems = target.param_problems(piece_params)
        errors += [ConfigError(f"{where}.{p.key}", p.message) for p in problems]
    return errors


def _resolve(registry: Registry, name: Any, path: str) -> Any:
    if not isinstance(name, str):
        raise ConfigError(path, f"expected a name, got {name!r}")
    if name in NOT_AVAILABLE and name not in registry:
        raise ConfigError(path, NOT_AVAILABLE[name])
    return resolve(registry, name, path=path)


def build_detection_model(
    params: Mapping[str, Any], *, path: str = "task.params"
) -> DetectionModel:
    """Build the model ``params`` describe; errors name the config key at fault."""

    raise_if(check_detection_params(params, path=path))
    backbone = build(
        BACKBONES, params["backbone_name"], params.get("backbone_params"),
        name_path=f"{path}.backbone_name", params_path=f"{path}.backbone_params",
    )  # fmt: skip
    stages = len(backbone.out_channels)
    num_scales = params.get("num_scales") or stages
    if num_scales > stages:
        raise ConfigError(
            f"{path}.num_scales",
            f"{num_scales}, but {params['backbone_name']} has {stages} stages",
        )
    channels = list(backbone.out_channels[-num_scales:])
    strides = list(backbone.out_strides[-num_scales:])
    neck = None
    if params.get("neck_name") is not None:
        neck = build(
            DETECTION_NECKS, params["neck_name"], params.get("neck_params"),
            name_path=f"{path}.neck_name", params_path=f"{path}.neck_params",
            in_channels=channels, in_strides=strides,
        )  # fmt: skip
        channels, strides = _neck_outputs(neck, f"{path}.neck_name")
    if len(set(channels)) != 1:
        raise ConfigError(
            f"{path}.neck_name",
            f"the detection head shares its convs across levels, but the levels have channels "
            f"{channels}; add a neck (e.g. FPN) that gives every level the same channels",
        )
    head = build(
        DETECTION_HEADS, params["head_name"], params.get("head_params"),
        name_path=f"{path}.head_name", params_path=f"{path}.head_params",
        in_channels=channels[0], in_strides=strides,
    )  # fmt: skip
    return DetectionModel(backbone=backbone, neck=neck, head=head, num_scales=num_scales)


def _neck_outputs(neck: nn.Module, path: str) -> tuple[list[int], list[int]]:
    """Channels and strides per output level of a neck (``out_channels``, ``out_strides``)."""
    if not isinstance(neck, MultiLevelNeck):
        raise ConfigError(path, f"{type(neck).__name__} must state out_channels and out_strides")
    channels, strides = neck.out_channels, neck.out_strides
    if isinstance(channels, int):
        channels = [channels] * len(strides)
    return [int(c) for c in channels], [int(s) for s in strides]


def loss_keys(params: Mapping[str, Any]) -> tuple[str, ...]:
    """The loss inputs the configured head produces (empty when the head is unknown)."""
    target = DETECTION_HEADS.find(params.get("head_name") or "")
    return tuple(target.loss_keys) if isinstance(target, DeclaresLossKeys) else ()
