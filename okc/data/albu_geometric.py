"""The albumentations geometric ops TorchOk configs use, registered under their names.

Each adapter takes albumentations' (1.3.0) parameters with its defaults and builds the okc or
Kornia op that does the same: flips and quarter turns with Kornia, size ops per sample
(``okc.data.ops``), random warps with cv2's border modes (``okc.data.warps``). Where both
libraries have a name, Kornia's parameter style is accepted too (``size``, ``resample``). A
value okc does not implement is refused (``ParamError``) rather than dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import kornia.augmentation as K
from torch import nn

from okc.data import ops, warps
from okc.data.albu_params import (
    Pair,
    axis_ranges,
    border,
    fixed_or_range,
    full_probability,
    int_range,
    nearest_only,
    resample,
    to_tuple,
    warp_args,
)
from okc.data.borders import BORDER_CONSTANT, BORDER_REFLECT_101, Fill
from okc.errors import ParamError
from okc.registry import AUGMENTATIONS

_register = AUGMENTATIONS.register


def _size(
    height: int | None, width: int | None, size: int | Sequence[int] | None
) -> int | tuple[int, int]:
    """albumentations' ``height``/``width`` or Kornia's ``size`` (exactly one style)."""
    if size is not None:
        if height is not None or width is not None:
            raise ValueError("set size, or height and width, not both")
        return size if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height is None or width is None:
        raise ValueError("set height and width (or size)")
    return int(height), int(width)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else size


def _interpolation(interpolation: int | str, resample_name: str | None) -> int | str:
    """albumentations' ``interpolation`` or Kornia's ``resample`` (which wins), checked."""
    if resample_name is not None:
        resample(resample_name, key="resample")
        return resample_name
    resample(interpolation)
    return interpolation


# --- size ops: per sample, before batching --------------------------------------------------


@_register
def Resize(
    *,
    height: int | None = None,
    width: int | None = None,
    size: int | Sequence[int] | None = None,
    side: str = "short",
    interpolation: int | str = 1,
    resample: str | None = None,
    antialias: bool = False,
    p: float = 1.0,
) -> nn.Module:
    """To ``height`` x ``width`` (or Kornia's ``size``: a pair, or an int for the ``side``).

    ``antialias: false`` is cv2.resize's (albumentations') linear and cubic resizing, which does
    not low-pass filter when shrinking; ``true`` does (torchvision's). Area (3) always averages.
    """
    target = _size(height, width, size)
    if isinstance(target, tuple) and side != "short":
        raise ParamError("side", "side applies to an int size only")
    full_probability(p, "Resize")
    return ops.Resize(
        target, side=side, interpolation=_interpolation(interpolation, resample),
        antialias=antialias, p=p,
    )  # fmt: skip


def _max_size(max_size: int | Sequence[int]) -> int:
    if not isinstance(max_size, int):
        raise ParamError(
            "max_size", "a list (a random size per image) is not supported; give one size"
        )
    return max_size


@_register
def LongestMaxSize(
    *,
    max_size: int | Sequence[int] = 1024,
    interpolation: int | str = 1,
    resample: str | None = None,
    p: float = 1.0,
) -> nn.Module:
    """Scale so the longer side is ``max_size``, keeping the aspect ratio."""
    full_probability(p, "LongestMaxSize")
    return ops.Resize(
        _max_size(max_size), side="long", interpolation=_interpolation(interpolation, resample),
        antialias=False,  # cv2.resize's, as albumentations
    )  # fmt: skip


@_register
def SmallestMaxSize(
    *,
    max_size: int | Sequence[int] = 1024,
    interpolation: int | str = 1,
    resample: str | None = None,
    p: float = 1.0,
) -> nn.Module:
    """Scale so the shorter side is ``max_size``, keeping the aspect ratio."""
    full_probability(p, "SmallestMaxSize")
    return ops.Resize(
        _max_size(max_size), side="short", interpolation=_interpolation(interpolation, resample),
        antialias=False,  # cv2.resize's, as albumentations
    )  # fmt: skip


@_register
def FitResize(
    *, max_height: int = 1024, max_width: int = 1024, interpolation: int | str = 1, p: float = 1.0
) -> nn.Module:
    """TorchOk's FitResize: fit inside the rectangle keeping the aspect ratio."""
    full_probability(p, "FitResize")
    return ops.FitResize(
        max_height, max_width, interpolation=_interpolation(interpolation, None), antialias=False
    )


@_register
def CenterCrop(
    *,
    height: int | None = None,
    width: int | None = None,
    size: int | Sequence[int] | None = None,
    p: float = 1.0,
) -> nn.Module:
    """The central ``height`` x ``width`` (or ``size``); zero-padded where the image is smaller
    (albumentations raises there)."""
    full_probability(p, "CenterCrop")
    return ops.CenterCrop(_pair(_size(height, width, size)))


@_register
def Crop(
    *, x_min: int = 0, y_min: int = 0, x_max: int = 1024, y_max: int = 1024, p: float = 1.0
) -> nn.Module:
    full_probability(p, "Crop")
    return ops.Crop(x_min, y_min, x_max, y_max)


@_register
def PadIfNeeded(
    *,
    min_height: int | None = 1024,
    min_width: int | None = 1024,
    pad_height_divisor: int | None = None,
    pad_width_divisor: int | None = None,
    position: str = "center",
    border_mode: int | str = BORDER_REFLECT_101,
    value: Fill = None,
    mask_value: Fill = None,
    p: float = 1.0,
) -> nn.Module:
    """Pad to a minimum size (or a multiple of the divisors) with cv2's ``border_mode``
    (albumentations' default: reflect-101); ``value``/``mask_value`` fill a constant border."""
    full_probability(p, "PadIfNeeded")
    return ops.PadIfNeeded(
        min_height, min_width, pad_height_divisor=pad_height_divisor,
        pad_width_divisor=pad_width_divisor, position=position, border=border(border_mode),
        value=value, mask_value=mask_value,
    )  # fmt: skip


# --- flips and quarter turns ------------------------------------------------------------------


@_register
def HorizontalFlip(*, p: float = 0.5) -> nn.Module:
    return K.RandomHorizontalFlip(p=p)


@_register
def VerticalFlip(*, p: float = 0.5) -> nn.Module:
    return K.RandomVerticalFlip(p=p)


@_register
def Flip(*, p: float = 0.5) -> nn.Module:
    """Horizontal, vertical or both, one of them per sample."""
    both = ops.Compose([K.RandomHorizontalFlip(p=1.0), K.RandomVerticalFlip(p=1.0)])
    return ops.OneOf([K.RandomHorizontalFlip(p=1.0), K.RandomVerticalFlip(p=1.0), both], p=p)


@_register
def Transpose(*, p: float = 0.5) -> nn.Module:
    """Swap rows and columns: a counter-clockwise quarter turn then a vertical flip (square
    images)."""
    turn = K.RandomRotation90(times=(1, 1), resample="nearest", p=1.0)
    return ops.Compose([turn, K.RandomVerticalFlip(p=1.0)], p=p)


@_register
def RandomRotate90(*, p: float = 0.5) -> nn.Module:
    """0-3 quarter turns (square images keep their size)."""
    return K.RandomRotation90(times=(0, 3), resample="nearest", p=p)  # exact quarter turns


# --- random warps (okc.data.warps) ------------------------------------------------------------


@_register
def Rotate(
    *,
    limit: float | Pair = 90,
    interpolation: int | str = 1,
    border_mode: int | str = BORDER_REFLECT_101,
    value: Fill = None,
    mask_value: Fill = None,
    rotate_method: str = "largest_box",
    crop_border: bool = False,
    p: float = 0.5,
) -> nn.Module:
    """Rotate about the centre by an angle from ``limit`` (degrees, counter-clockwise)."""
    if crop_border:
        raise ParamError(
            "crop_border", "true gives every sample its own size (the largest crop of its "
            "rotation): not supported; follow Rotate with a fixed-size crop instead",
        )  # fmt: skip
    return warps.ShiftScaleRotate(
        shift_x=(0.0, 0.0), shift_y=(0.0, 0.0), scale=(1.0, 1.0),
        rotate=to_tuple(limit, key="limit"), rotate_method=rotate_method,
        **warp_args(interpolation, border_mode, value, mask_value, p),
    )  # fmt: skip


@_register
def SafeRotate(
    *,
    limit: float | Pair = 90,
    interpolation: int | str = 1,
    border_mode: int | str = BORDER_REFLECT_101,
    value: Fill = None,
    mask_value: Fill = None,
    p: float = 0.5,
) -> nn.Module:
    """Rotate, scaled down so the whole rotated image stays in the frame."""
    return warps.SafeRotate(
        rotate=to_tuple(limit, key="limit"),
        **warp_args(interpolation, border_mode, value, mask_value, p),
    )


@_register
def ShiftScaleRotate(
    *,
    shift_limit: float | Pair = 0.0625,
    scale_limit: float | Pair = 0.1,
    rotate_limit: float | Pair = 45,
    interpolation: int | str = 1,
    border_mode: int | str = BORDER_REFLECT_101,
    value: Fill = None,
    mask_value: Fill = None,
    shift_limit_x: float | Pair | None = None,
    shift_limit_y: float | Pair | None = None,
    rotate_method: str = "largest_box",
    p: float = 0.5,
) -> nn.Module:
    """A random affine: shift (fraction of the size), scale ``1 + U(scale_limit)``, rotation."""
    return warps.ShiftScaleRotate(
        shift_x=to_tuple(shift_limit if shift_limit_x is None else shift_limit_x,
                         key="shift_limit_x" if shift_limit_x is not None else "shift_limit"),
        shift_y=to_tuple(shift_limit if shift_limit_y is None else shift_limit_y,
                         key="shift_limit_y" if shift_limit_y is not None else "shift_limit"),
        scale=to_tuple(scale_limit, bias=1.0, key="scale_limit"),
        rotate=to_tuple(rotate_limit, key="rotate_limit"), rotate_method=rotate_method,
        **warp_args(interpolation, border_mode, value, mask_value, p),
    )  # fmt: skip


@_register
def Affine(
    *,
    scale: float | Pair | Mapping[str, Any] | None = None,
    translate_percent: float | Pair | Mapping[str, Any] | None = None,
    translate_px: int | Sequence[int] | Mapping[str, Any] | None = None,
    rotate: float | Pair | None = None,
    shear: float | Pair | Mapping[str, Any] | None = None,
    interpolation: int | str = 1,
    mask_interpolation: int | str = 0,
    cval: Fill = 0,
    cval_mask: Fill = 0,
    mode: int | str = BORDER_CONSTANT,
    fit_output: bool = False,
    keep_ratio: bool = False,
    p: float = 0.5,
) -> nn.Module:
    """albumentations' Affine: a number is a fixed value, a pair a range, ``{x:, y:}`` per axis;
    with none of scale/translate/rotate/shear set, its defaults (scale 0.9-1.1, translation
    ±10 %, rotation ±15°, shear ±10°)."""
    nearest_only(mask_interpolation, key="mask_interpolation")
    if fit_output:
        raise ParamError("fit_output", "true gives every sample its own size: not supported")
    if translate_percent is not None and translate_px is not None:
        raise ParamError("translate_px", "set translate_percent or translate_px, not both")
    if all(v is None for v in (scale, translate_percent, translate_px, rotate, shear)):
        scale, translate_percent = {"x": (0.9, 1.1), "y": (0.9, 1.1)}, (-0.1, 0.1)
        rotate, shear = (-15, 15), (-10, 10)
    scales = axis_ranges(1.0 if scale is None else scale, default=1.0, key="scale")
    if keep_ratio and scales["x"] != scales["y"]:
        raise ParamError("keep_ratio", "needs the same scale range for x and y")
    percent = (
        None if translate_percent is None
        else axis_ranges(translate_percent, default=0.0, key="translate_percent")
    )  # fmt: skip
    pixels = None
    if translate_px is not None or percent is None:
        pixels = axis_ranges(0 if translate_px is None else translate_px, default=0,
                             key="translate_px")  # fmt: skip
    return warps.Affine(
        scale=scales, translate_percent=percent, translate_px=pixels,
        rotate=fixed_or_range(0.0 if rotate is None else rotate, key="rotate"),
        shear=axis_ranges(0.0 if shear is None else shear, default=0.0, key="shear"),
        keep_ratio=keep_ratio,
        **warp_args(interpolation, mode, cval, cval_mask, p, border_key="mode"),
    )  # fmt: skip


@_register
def Perspective(
    *,
    scale: float | Pair = (0.05, 0.1),
    keep_size: bool = True,
    pad_mode: int | str = BORDER_CONSTANT,
    pad_val: Fill = 0,
    mask_pad_val: Fill = 0,
    fit_output: bool = False,
    interpolation: int | str = 1,
    p: float = 0.5,
) -> nn.Module:
    """A random four-point perspective warp, corner jitter |N(0, s)| with s from ``scale``."""
    if not keep_size:
        raise ParamError("keep_size", "false gives every sample its own size: not supported")
    return warps.Perspective(
        scale=to_tuple(scale, low=0, key="scale"), fit_output=fit_output,
        **warp_args(interpolation, pad_mode, pad_val, mask_pad_val, p, border_key="pad_mode"),
    )  # fmt: skip


@_register
def ElasticTransform(
    *,
    alpha: float = 1.0,
    sigma: float = 50.0,
    alpha_affine: float = 50.0,
    interpolation: int | str = 1,
    border_mode: int | str = BORDER_REFLECT_101,
    value: Fill = None,
    mask_value: Fill = None,
    approximate: bool = False,
    same_dxdy: bool = False,
    p: float = 0.5,
) -> nn.Module:
    """albumentations 1.3.0's elastic transform: a random affine of up to ``alpha_affine``
    pixels per anchor and a smoothed displacement field (``alpha``, ``sigma``)."""
    return warps.ElasticTransform(
        alpha=alpha, sigma=sigma, alpha_affine=alpha_affine, approximate=approximate,
        same_dxdy=same_dxdy, **warp_args(interpolation, border_mode, value, mask_value, p),
    )  # fmt: skip


@_register
def GridDistortion(
    *,
    num_steps: int = 5,
    distort_limit: float | Pair = 0.3,
    interpolation: int | str = 1,
    border_mode: int | str = BORDER_REFLECT_101,
    value: Fill = None,
    mask_value: Fill = None,
    normalized: bool = False,
    p: float = 0.5,
) -> nn.Module:
    return warps.GridDistortion(
        num_steps=num_steps, distort_limit=to_tuple(distort_limit, key="distort_limit"),
        normalized=normalized, **warp_args(interpolation, border_mode, value, mask_value, p),
    )  # fmt: skip


@_register
def OpticalDistortion(
    *,
    distort_limit: float | Pair = 0.05,
    shift_limit: float | Pair = 0.05,
    interpolation: int | str = 1,
    border_mode: int | str = BORDER_REFLECT_101,
    value: Fill = None,
    mask_value: Fill = None,
    p: float = 0.5,
) -> nn.Module:
    return warps.OpticalDistortion(
        distort_limit=to_tuple(distort_limit, key="distort_limit"),
        shift_limit=to_tuple(shift_limit, key="shift_limit"),
        **warp_args(interpolation, border_mode, value, mask_value, p),
    )  # fmt: skip


# --- random crops -----------------------------------------------------------------------------


@_register
def RandomCrop(
    *,
    height: int | None = None,
    width: int | None = None,
    size: int | Sequence[int] | None = None,
    padding: int | Sequence[int] | None = None,
    pad_if_needed: bool = False,
    fill: float = 0,
    padding_mode: str = "constant",
    p: float = 1.0,
) -> nn.Module:
    """A random ``height`` x ``width`` crop (or Kornia's ``size`` with optional ``padding``)."""
    full_probability(p, "RandomCrop")
    target = _pair(_size(height, width, size))
    pad = tuple(padding) if isinstance(padding, (list, tuple)) else padding
    return K.RandomCrop(
        target, padding=pad, pad_if_needed=pad_if_needed, fill=fill, padding_mode=padding_mode,
        p=p,
    )  # fmt: skip


@_register
def RandomResizedCrop(
    *,
    height: int | None = None,
    width: int | None = None,
    size: int | Sequence[int] | None = None,
    scale: Pair = (0.08, 1.0),
    ratio: Pair = (0.75, 1.3333333333333333),
    interpolation: int | str = 1,
    resample: str | None = None,
    p: float = 1.0,
) -> nn.Module:
    """A crop of ``U(scale)`` of the area with a log-uniform aspect ``ratio``, resized to
    ``height`` x ``width`` (or ``size``), as albumentations draws and resizes it."""
    full_probability(p, "RandomResizedCrop")
    target = _pair(_size(height, width, size))
    scales = (float(scale[0]), float(scale[1]))
    ratios = (float(ratio[0]), float(ratio[1]))
    if not 0 < scales[0] <= scales[1]:
        raise ParamError("scale", f"needs 0 < low <= high, got {list(scale)}")
    if not 0 < ratios[0] <= ratios[1]:
        raise ParamError("ratio", f"needs 0 < low <= high, got {list(ratio)}")
    return warps.RandomResizedCrop(
        scale=scales, ratio=ratios, size=target,
        interpolation=_interpolation(interpolation, resample), p=p,
    )  # fmt: skip


@_register
def RandomSizedCrop(
    *,
    min_max_height: Sequence[int],
    height: int,
    width: int,
    w2h_ratio: float = 1.0,
    interpolation: int | str = 1,
    p: float = 1.0,
) -> nn.Module:
    """A crop ``randint(min_max_height)`` pixels high, ``w2h_ratio`` times as wide, resized."""
    full_probability(p, "RandomSizedCrop")
    low, high = int_range(min_max_height, low=0, key="min_max_height")
    if not 1 <= low <= high:
        raise ParamError("min_max_height", f"needs 1 <= min <= max, got {list(min_max_height)}")
    return warps.RandomSizedCrop(
        min_max_height=(low, high), size=(height, width), w2h_ratio=w2h_ratio,
        interpolation=_interpolation(interpolation, None), p=p,
    )  # fmt: skip
