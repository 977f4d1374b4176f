"""What the composite model asks of its pieces: the declared extension points.

Every piece states its sizes, so the next one is built from them and a config never repeats a
channel count:

- a backbone: ``out_channels`` and ``out_strides`` (one per stage map, finest first); its forward
  returns the list of stage maps;
- a neck: built with ``in_channels``/``in_strides`` (the backbone's), states ``out_channels``;
- a pooling: built with ``in_channels``, states ``out_channels``;
- a head: built with ``in_channels``, states ``out_channels``; forward is ``(x, target=None)``.

Optional capabilities, each a runtime-checkable Protocol the model tests with ``isinstance``
(a piece that lacks one gets the default noted):

- ``StatesInChannels``: a backbone that states the image channels it takes (images are then
  checked before the first conv; default: not checked);
- ``TakesImageSize``: a head whose forward also takes ``image_size`` (the input's H, W), as
  segmentation heads that upsample to it do (default: not passed);
- ``DeclaresInputKind``: a head that takes a pooled ``"vector"`` or a ``"map"`` (a misfit with the
  pooling is then a config error; default: unchecked);
- ``ChecksParams``: a factory with an open signature (timm's backbones take any timm keyword, so
  no Params class can state their rules) that finds value problems in its params without being
  built; ``ModelKeys`` asks it (default: only the signature is checked).

Detection (``okc.models.detection``) asks two more things:

- ``MultiLevelNeck``: a detection neck states ``out_channels`` and ``out_strides`` per output
  level (required);
- ``DeclaresLossKeys``: a detection head class lists the loss inputs it produces in
  ``loss_keys`` (for ``okc check``'s mapping check; default: unchecked until the first batch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from okc.errors import ParamError


@runtime_checkable
class StatesInChannels(Protocol):
    in_channels: int


@runtime_checkable
class TakesImageSize(Protocol):
    needs_image_size: bool


@runtime_checkable
class DeclaresInputKind(Protocol):
    input_kind: Literal["vector", "map"]


@runtime_checkable
class ChecksParams(Protocol):
    def param_problems(self, params: Mapping[str, Any]) -> list[ParamError]: ...


@runtime_checkable
class MultiLevelNeck(Protocol):
    out_channels: int | Sequence[int]
    out_strides: Sequence[int]


@runtime_checkable
class DeclaresLossKeys(Protocol):
    loss_keys: tuple[str, ...]


def takes_image_size(head: object) -> bool:
    return isinstance(head, TakesImageSize) and bool(head.needs_image_size)


def input_kind(head: object) -> str | None:
    return head.input_kind if isinstance(head, DeclaresInputKind) else None
