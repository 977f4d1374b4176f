"""The nested mmdet-style settings detection configs carry (``norm_cfg``, ``test_cfg``, ...).

TorchOk handed these dicts to mmdet, which read the keys it knew and skipped the rest. okc types
each as a small frozen class that the one converter (``okc.config.convert``) structures inside
the component's params: an unknown key gets a did-you-mean, and a setting okc does not implement
is refused with the reason (``ParamError`` from ``__attrs_post_init__``), so nothing a config says
is silently dropped. Errors name the dotted key inside the params (``test_cfg.nms.type``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import attrs

from okc.errors import ParamError

T = TypeVar("T")


def cfg(cls: type[T]) -> type[T]:
    """A frozen keyword-only attrs class whose errors name it (``NmsCfg has no parameter``)."""
    cls = attrs.frozen(kw_only=True)(cls)
    cls.__okc_component__ = cls.__name__  # type: ignore[attr-defined]  # read by okc.config.convert
    return cls


def _one_of(key: str, value: Any, allowed: Sequence[Any], why: str = "") -> None:
    if value not in allowed:
        listed = ", ".join(repr(a) for a in allowed)
        raise ParamError(key, f"expected one of {listed}, got {value!r}{why}")


def _in_unit(key: str, value: float | None, *, closed: bool = False) -> None:
    if value is not None and not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        raise ParamError(key, f"must be in [0, {'1]' if closed else '1)'}, got {value}")


# --- layers ---------------------------------------------------------------------------------------


@cfg
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
        _one_of("type", self.type, ("BN", "BN2d", "GN"), why if "Sync" in self.type else "")
        if self.type == "GN" and (self.num_groups is None or self.num_groups < 1):
            raise ParamError("num_groups", "GN needs num_groups >= 1")
        if self.type != "GN" and self.num_groups is not None:
            raise ParamError("num_groups", f"only GN has groups, not {self.type}")
        if self.type == "GN" and self.momentum is not None:
            raise ParamError("momentum", "GroupNorm has no running statistics")


@cfg
class ActCfg:
    """mmcv's ``act_cfg``: ``{type: ReLU}`` and the other common activations."""

    type: Literal["ReLU", "ReLU6", "LeakyReLU", "SiLU", "Swish", "GELU", "Sigmoid", "Tanh"]
    inplace: bool = True
    negative_slope: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.negative_slope is not None and self.type != "LeakyReLU":
            raise ParamError("negative_slope", "only LeakyReLU has a negative_slope")


RELU = ActCfg(type="ReLU")


@cfg
class UpsampleCfg:
    """mmdet FPN's ``upsample_cfg``: the arguments of ``F.interpolate``."""

    mode: Literal["nearest", "bilinear", "bicubic", "nearest-exact"] = "nearest"
    scale_factor: float | None = None
    align_corners: bool | None = None


# --- inference ------------------------------------------------------------------------------------


@cfg
class NmsCfg:
    """mmcv's ``nms`` settings, run with torchvision's ``batched_nms`` (per class) or ``nms``."""

    type: str = "nms"
    iou_threshold: float = 0.5
    class_agnostic: bool = False

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("nms",), " (okc runs torchvision's hard NMS)")
        _in_unit("iou_threshold", self.iou_threshold, closed=True)


@cfg
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
    nms: NmsCfg = NmsCfg()
    max_per_img: int = 100

    def __attrs_post_init__(self) -> None:
        if self.max_per_img < 1:
            raise ParamError("max_per_img", f"must be at least 1, got {self.max_per_img}")
        _in_unit("score_thr", self.score_thr)


# --- training -------------------------------------------------------------------------------------


@cfg
class AssignerCfg:
    """mmdet's ``MaxIoUAssigner``: which prior (anchor) learns which ground-truth box.

    A prior whose best IoU with any box is at least ``pos_iou_thr`` learns that box; below
    ``neg_iou_thr`` (or inside the ``[low, high)`` pair) it learns background; in between it is
    ignored. With ``match_low_quality`` every box also claims its best priors (all that tie with
    ``gt_max_assign_all``) when that IoU is at least ``min_pos_iou``. ``ignore_iof_thr`` needs
    boxes marked "ignore", which okc's datasets do not provide, so only values <= 0 (off) pass.
    """

    type: Literal["MaxIoUAssigner"] = "MaxIoUAssigner"
    pos_iou_thr: float = 0.5
    neg_iou_thr: float | tuple[float, float] = 0.4
    min_pos_iou: float = 0.0
    gt_max_assign_all: bool = True
    ignore_iof_thr: float = -1.0
    match_low_quality: bool = True

    def __attrs_post_init__(self) -> None:
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
        return float(self.neg_iou_thr[0]), float(self.neg_iou_thr[1])


@cfg
class SamplerCfg:
    type: str = "PseudoSampler"

    def __attrs_post_init__(self) -> None:
        _one_of("type", self.type, ("PseudoSampler",), " (dense heads use every prior)")


@cfg
class TrainCfg:
    """mmdet's ``train_cfg`` of a dense head.

    ``allowed_border``: priors reaching more than this many pixels outside the image are ignored
    (-1: none is). ``pos_weight`` other than -1 (positives weigh 1) and ``debug`` are refused:
    okc's loss inputs carry no per-prior weights, and there is no debug drawing.
    """

    assigner: AssignerCfg | None = None
    sampler: SamplerCfg = SamplerCfg()
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


@cfg
class AnchorGeneratorCfg:
    """mmdet's ``AnchorGenerator`` (RetinaNet's anchors), built with torchvision's generator.

    Per level the anchor sides are ``stride * scale`` for each scale (``scales``, or
    ``octave_base_scale * 2 ** (i / scales_per_octave)``), reshaped by each of ``ratios`` (h/w);
    ``strides`` default to the levels' strides. ``center_offset`` (0 or 0.5) places anchor centres
    at the cell's corner or centre.
    """

    type: Literal["AnchorGenerator"] = "AnchorGenerator"
    strides: tuple[int, ...] | None = None
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    octave_base_scale: float | None = 4
    scales_per_octave: int | None = 3
    scales: tuple[float, ...] | None = None
    center_offset: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.scales is not None and (
            self.octave_base_scale not in (None, 4) or self.scales_per_octave not in (None, 3)
        ):
            raise ParamError("scales", "set scales, or octave_base_scale/scales_per_octave")
        if not self.ratios or any(r <= 0 for r in self.ratios):
            raise ParamError("ratios", f"expected positive aspect ratios, got {self.ratios}")
        _in_unit("center_offset", self.center_offset)

    def level_scales(self) -> list[float]:
        if self.scales is not None:
            return [float(s) for s in self.scales]
        base, count = float(self.octave_base_scale or 4), int(self.scales_per_octave or 3)
        return [base * 2 ** (i / count) for i in range(count)]

    @property
    def num_anchors(self) -> int:
        return len(self.level_scales()) * len(self.ratios)


@cfg
class DeltaCoderCfg:
    """mmdet's ``DeltaXYWHBBoxCoder``, run as torchvision's ``BoxCoder`` (weights = 1 / stds).

    torchvision's coder has no means, so ``target_means`` must be zeros.
    """

    type: Literal["DeltaXYWHBBoxCoder"] = "DeltaXYWHBBoxCoder"
    target_means: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    target_stds: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    clip_border: bool = True

    def __attrs_post_init__(self) -> None:
        if any(m != 0 for m in self.target_means):
            raise ParamError("target_means", "torchvision's BoxCoder needs zero means")
        if any(s <= 0 for s in self.target_stds):
            raise ParamError("target_stds", "expected 4 positive numbers")

    @property
    def weights(self) -> tuple[float, float, float, float]:
        wx, wy, ww, wh = (1.0 / s for s in self.target_stds)
        return wx, wy, ww, wh
