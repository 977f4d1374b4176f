"""The nested mmdet-style settings detection configs carry (``norm_cfg``, ``test_cfg``, ...).

TorchOk handed these dicts to mmdet, which read the keys it knew and skipped the rest. okc binds
each dict to a small frozen class: an unknown key gets a did-you-mean, and a setting okc does not
implement is refused with the reason, so nothing a config says is silently dropped. Errors are
``ParamError``\\ s keyed by the dotted path inside the component's params (``test_cfg.nms.type``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import attrs

from okc.config.bind import check_params
from okc.errors import ParamError

T = TypeVar("T")


def parse(cls: type[T], value: Any, key: str) -> T:
    """``value`` (a mapping, or None for the defaults) bound to ``cls``; errors name ``key``."""
    if value is None:
        value = {}
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ParamError(key, f"expected a mapping, got {value!r}")
    errors = check_params(cls, value, path=key)
    if errors:
        raise ParamError(errors[0].path, errors[0].message)
    try:
        return cls(**value)
    except ParamError as err:
        raise ParamError(f"{key}.{err.key}", err.message) from None


def parse_optional(cls: type[T], value: Any, key: str) -> T | None:
    return None if value is None else parse(cls, value, key)


def cfg_problems(params: Mapping[str, Any], fields: Mapping[str, type]) -> list[ParamError]:
    """The ``ParamError`` of each nested setting in ``params`` that does not parse."""
    problems = []
    for key, cls in fields.items():
        if params.get(key) is None:
            continue
        try:
            parse(cls, params[key], key)
        except ParamError as err:
            problems.append(err)
    return problems


def _one_of(key: str, value: Any, allowed: Sequence[Any], why: str = "") -> None:
    if value not in allowed:
        listed = ", ".join(repr(a) for a in allowed)
        raise ParamError(key, f"expected one of {listed}, got {value!r}{why}")


# --- layers ---------------------------------------------------------------------------------------

_NORMS = ("BN", "BN2d", "GN")


@attrs.frozen(kw_only=True)
class NormCfg:
    """mmcv's ``norm_cfg``: ``{type: GN, num_groups: 32}`` or ``{type: BN}``.

    SyncBN is refused: okc converts BatchNorm to SyncBatchNorm with ``trainer.sync_batchnorm``.
    """

    type: str
    num_groups: int | None = None
    requires_grad: bool = True
    eps: float | None = None
    momentum: float | None = None

    def __attrs_post_init__(self) -> None:
        why = "; for synchronized BatchNorm use BN with trainer.sync_batchnorm: true"
        _one_of("type", self.type, _NORMS, why if "Sync" in self.type else "")
        if self.type == "GN" and (self.num_groups is None or self.num_groups < 1):
            raise ParamError("num_groups", "GN needs num_groups >= 1")
        if self.type != "GN" and self.num_groups is not None:
            raise ParamError("num_groups", f"only GN has groups, not {self.type}")
        if self.type == "GN" and self.momentum is not None:
            raise ParamError("momentum", "GroupNorm has no running statistics")


_ACTIVATIONS = ("ReLU", "ReLU6", "LeakyReLU", "SiLU", "Swish", "GELU", "Sigmoid", "Tanh")


@attrs.frozen(kw_only=True)
class ActCfg:
    """mmcv's ``act_cfg``: ``{type: ReLU}`` and the other common activations."""

    type: str
    inplace: bool = True
    negative_slope: float | None = None

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, _ACTIVATIONS)
        if self.negative_slope is not None and self.type != "LeakyReLU":
            raise ParamError("negative_slope", "only LeakyReLU has a negative_slope")


@attrs.frozen(kw_only=True)
class UpsampleCfg:
    """mmdet FPN's ``upsample_cfg``: the arguments of ``F.interpolate``."""

    mode: str = "nearest"
    scale_factor: float | None = None
    align_corners: bool | None = None

    def __attrs_post_init__(self) -> None:
        _one_of("mode", self.mode, ("nearest", "bilinear", "bicubic", "nearest-exact"))


# --- inference ------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class NmsCfg:
    """mmcv's ``nms`` settings, run with torchvision's ``batched_nms`` (per class) or ``nms``."""

    type: str = "nms"
    iou_threshold: float = 0.5
    class_agnostic: bool = False

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("nms",), " (okc runs torchvision's hard NMS)")
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ParamError("iou_threshold", f"must be in [0, 1], got {self.iou_threshold}")


@attrs.frozen(kw_only=True)
class TestCfg:
    """mmdet's ``test_cfg`` of a dense head, applied per image in this order:

    per pyramid level, keep the (location, class) pairs scoring above ``score_thr`` and of those
    the ``nms_pre`` best (``nms_pre <= 0``: all); multiply by the score factor (FCOS: centerness);
    drop boxes not wider and taller than ``min_bbox_size``; NMS; keep the ``max_per_img`` best.
    """

    __test__ = False  # not a pytest class

    nms_pre: int = 1000
    min_bbox_size: float = 0.0
    score_thr: float = 0.05
    nms: NmsCfg = attrs.field(factory=NmsCfg, converter=lambda v: parse(NmsCfg, v, "nms"))
    max_per_img: int = 100

    def __attrs_post_init__(self) -> None:
        if self.max_per_img < 1:
            raise ParamError("max_per_img", f"must be at least 1, got {self.max_per_img}")
        if not 0.0 <= self.score_thr < 1.0:
            raise ParamError("score_thr", f"must be in [0, 1), got {self.score_thr}")


# --- training -------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class AssignerCfg:
    """mmdet's ``MaxIoUAssigner``: which prior (anchor) learns which ground-truth box.

    A prior whose best IoU with any box is at least ``pos_iou_thr`` learns that box; below
    ``neg_iou_thr`` (or inside the ``[low, high)`` pair) it learns background; in between it is
    ignored. With ``match_low_quality`` every box also claims its best priors (all that tie with
    ``gt_max_assign_all``) when that IoU is at least ``min_pos_iou``. ``ignore_iof_thr`` needs
    boxes marked "ignore", which okc's datasets do not provide, so only values <= 0 (off) pass.
    """

    type: str = "MaxIoUAssigner"
    pos_iou_thr: float = 0.5
    neg_iou_thr: float | Sequence[float] = 0.4
    min_pos_iou: float = 0.0
    gt_max_assign_all: bool = True
    ignore_iof_thr: float = -1.0
    match_low_quality: bool = True

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("MaxIoUAssigner",))
        if self.ignore_iof_thr > 0:
            raise ParamError(
                "ignore_iof_thr",
                "needs ground-truth boxes marked 'ignore', which okc's datasets do not provide; "
                "set it to -1",
            )
        low, high = self.negative_range
        if not 0.0 <= low <= high <= self.pos_iou_thr <= 1.0:
            raise ParamError(
                "neg_iou_thr", "need 0 <= neg_iou_thr <= pos_iou_thr <= 1 (IoU thresholds)"
            )

    @property
    def negative_range(self) -> tuple[float, float]:
        if isinstance(self.neg_iou_thr, (int, float)):
            return 0.0, float(self.neg_iou_thr)
        if len(self.neg_iou_thr) != 2:
            raise ParamError("neg_iou_thr", "expected a number or a [low, high) pair")
        return float(self.neg_iou_thr[0]), float(self.neg_iou_thr[1])


@attrs.frozen(kw_only=True)
class SamplerCfg:
    type: str = "PseudoSampler"

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("PseudoSampler",), " (dense heads use every prior)")


@attrs.frozen(kw_only=True)
class TrainCfg:
    """mmdet's ``train_cfg`` of a dense head.

    ``allowed_border``: priors reaching more than this many pixels outside the image are ignored
    (-1: none is). ``pos_weight`` other than -1 (positives weigh 1) and ``debug`` are refused:
    okc's loss inputs carry no per-prior weights, and there is no debug drawing.
    """

    assigner: AssignerCfg | None = attrs.field(
        default=None, converter=lambda v: parse_optional(AssignerCfg, v, "assigner")
    )
    sampler: SamplerCfg = attrs.field(
        factory=SamplerCfg, converter=lambda v: parse(SamplerCfg, v, "sampler")
    )
    allowed_border: float = -1
    pos_weight: float = -1
    debug: bool = False

    def __attrs_post_init__(self) -> None:
        if self.pos_weight != -1:
            raise ParamError(
                "pos_weight", "okc weighs positives like negatives (-1); other values are refused"
            )
        if self.debug:
            raise ParamError("debug", "okc has no debug drawing; set it to false")


# --- priors and box coding ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class AnchorGeneratorCfg:
    """mmdet's ``AnchorGenerator`` (RetinaNet's anchors), built with torchvision's generator.

    Per level the anchor sides are ``stride * scale`` for each scale (``scales``, or
    ``octave_base_scale * 2 ** (i / scales_per_octave)``), reshaped by each of ``ratios`` (h/w);
    ``strides`` default to the levels' strides. ``center_offset`` (0 or 0.5) places anchor centres
    at the cell's corner or centre.
    """

    type: str = "AnchorGenerator"
    strides: Sequence[int] | None = None
    ratios: Sequence[float] = (0.5, 1.0, 2.0)
    octave_base_scale: float | None = 4
    scales_per_octave: int | None = 3
    scales: Sequence[float] | None = None
    center_offset: float = 0.0

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("AnchorGenerator",))
        if self.scales is not None and (
            self.octave_base_scale not in (None, 4) or self.scales_per_octave not in (None, 3)
        ):
            raise ParamError("scales", "set scales, or octave_base_scale/scales_per_octave")
        if not self.ratios or any(r <= 0 for r in self.ratios):
            raise ParamError("ratios", f"expected positive aspect ratios, got {self.ratios}")
        if not 0.0 <= self.center_offset < 1.0:
            raise ParamError("center_offset", f"must be in [0, 1), got {self.center_offset}")

    def level_scales(self) -> list[float]:
        if self.scales is not None:
            return [float(s) for s in self.scales]
        base, count = float(self.octave_base_scale or 4), int(self.scales_per_octave or 3)
        return [base * 2 ** (i / count) for i in range(count)]

    @property
    def num_anchors(self) -> int:
        return len(self.level_scales()) * len(self.ratios)


@attrs.frozen(kw_only=True)
class DeltaCoderCfg:
    """mmdet's ``DeltaXYWHBBoxCoder``, run as torchvision's ``BoxCoder`` (weights = 1 / stds).

    torchvision's coder has no means, so ``target_means`` must be zeros.
    """

    type: str = "DeltaXYWHBBoxCoder"
    target_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0)
    target_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
    clip_border: bool = True

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("DeltaXYWHBBoxCoder",))
        if len(self.target_means) != 4 or any(m != 0 for m in self.target_means):
            raise ParamError("target_means", "torchvision's BoxCoder needs zero means")
        if len(self.target_stds) != 4 or any(s <= 0 for s in self.target_stds):
            raise ParamError("target_stds", "expected 4 positive numbers")

    @property
    def weights(self) -> tuple[float, float, float, float]:
        wx, wy, ww, wh = (1.0 / s for s in self.target_stds)
        return wx, wy, ww, wh
