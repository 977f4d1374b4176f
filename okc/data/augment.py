"""Augmentations and transforms from config, as Kornia ops on the batch, on the device.

Names are Kornia's own (any ``kornia.augmentation`` 2D class, through the registry's fallback) and
the albumentations names TorchOk configs use, registered here and mapped to their Kornia (or okc)
equivalent with albumentations' defaults. Where both libraries have a name (RandomCrop, Resize,
CenterCrop, Normalize, ColorJitter, RandomResizedCrop, RandomBrightness, ...) both parameter styles
are accepted: albumentations' ``height``/``width`` and Kornia's ``size``, ``interpolation`` and
``resample``. Some mappings are approximate (noted in their docstrings): Kornia's ops are not
pixel-identical to OpenCV's. Containers (Compose, OneOf, SomeOf, Sequential) take
``params.transforms``, a list of ``{name, params}``.

Masks and boxes follow the geometric ops (``okc.data.ops``): every op here moves boxes or leaves
them alone, except ``ElasticTransform`` (and Kornia's elastic, fisheye and thin-plate warps), which
a dataset with boxes refuses when its pipeline is built.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import kornia.augmentation as K
from torch import nn

from okc.config.bind import check_params, raise_if, resolve
from okc.data import ops
from okc.errors import ConfigError, OkcError
from okc.registry import AUGMENTATIONS

Pair = Sequence[float]
_register = AUGMENTATIONS.register
CONTAINERS = ("Compose", "Sequential", "OneOf", "SomeOf")


# --- the Kornia fallback --------------------------------------------------------------------------


@functools.cache
def _kornia_ops() -> dict[str, type]:
    mixes = tuple(c for c in (getattr(K, "MixAugmentationBaseV2", None),) if c is not None)
    return {
        name: cls
        for name, cls in vars(K).items()
        if inspect.isclass(cls)
        and issubclass(cls, K.AugmentationBase2D)
        and not name.endswith("Base2D")
        and not (mixes and issubclass(cls, mixes))  # mixing needs labels: not an image op
    }


def kornia_lookup(name: str) -> type | None:
    return _kornia_ops().get(name)


def kornia_names() -> list[str]:
    return list(_kornia_ops())


# --- building from config -------------------------------------------------------------------------


def entry(item: Any, path: str) -> tuple[str, dict[str, Any]]:
    """``(name, params)`` of a config entry: an ``Augmentation`` or a ``{name, params}`` mapping."""
    if isinstance(item, Mapping):
        extra = set(item) - {"name", "params"}
        if extra:
            raise ConfigError(
                f"{path}.{sorted(extra)[0]}", "unknown key; an entry has name and params"
            )
        name, params = item.get("name"), item.get("params") or {}
    else:
        name, params = getattr(item, "name", None), getattr(item, "params", None) or {}
    if not isinstance(name, str):
        raise ConfigError(path, "expected a mapping with 'name' (and optional 'params')")
    if not isinstance(params, Mapping):
        raise ConfigError(f"{path}.params", f"expected a mapping, got {params!r}")
    return name, dict(params)


def _prepared(name: str, params: dict[str, Any], path: str) -> tuple[Any, dict[str, Any]]:
    target = resolve(AUGMENTATIONS, name, path=f"{path}.name")
    if "always_apply" in params and "always_apply" not in _parameters(target):
        always = params.pop("always_apply")  # albumentations: apply regardless of p
        params["p"] = 1.0 if always else params.get("p", _parameters(target)["p"].default)
    return target, params


def check_ops(items: Sequence[Any], *, path: str) -> list[ConfigError]:
    """Problems in a transform/augment list (names, params, nested transforms), building nothing."""
    errors: list[ConfigError] = []
    for i, item in enumerate(items):
        where = f"{path}.{i}"
        try:
            name, params = entry(item, where)
            target, params = _prepared(name, params, where)
        except ConfigError as err:
            errors.append(err)
            continue
        nested = params.get("transforms")
        if nested is not None:
            if isinstance(nested, (list, tuple)):
                errors += check_ops(nested, path=f"{where}.params.transforms")
            else:
                errors.append(ConfigError(f"{where}.params.transforms", "expected a list"))
        errors += check_params(target, params, path=f"{where}.params")
    return errors


def build_ops(items: Sequence[Any], *, path: str) -> list[nn.Module]:
    """Build a transform/augment list; errors name the entry's key path."""
    raise_if(check_ops(items, path=path))
    return [_build(item, f"{path}.{i}") for i, item in enumerate(items)]


def _build(item: Any, path: str) -> nn.Module:
    name, params = entry(item, path)
    target, params = _prepared(name, params, path)
    if "transforms" in params:
        params["transforms"] = build_ops(params["transforms"], path=f"{path}.params.transforms")
    elif target in _kornia_ops().values():
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    try:
        op = target(**params)
    except OkcError:
        raise
    except (ValueError, TypeError, KeyError, AssertionError) as err:
        raise ConfigError(f"{path}.params", f"{name}: {err}") from err
    if not isinstance(op, nn.Module):
        raise ConfigError(f"{path}.name", f"{name} does not build an augmentation module")
    return op


def _parameters(target: Any) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(target).parameters
    except (TypeError, ValueError):
        return {}


# --- parameter helpers ----------------------------------------------------------------------------


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


def _range(value: float | Pair, *, around: float = 0.0) -> tuple[float, float]:
    """albumentations' limit convention: ``x`` means ``(around - x, around + x)``."""
    if isinstance(value, (int, float)):
        return around - abs(value), around + abs(value)
    return float(value[0]), float(value[1])


def _resample(
    interpolation: int | str | None, resample: str | None, default: str = "bilinear"
) -> str:
    if resample is not None:
        return ops.kornia_resample(resample)
    return ops.kornia_resample(interpolation) if interpolation is not None else default


def _odd(limit: int | Sequence[int]) -> int:
    """The largest odd kernel size allowed by an albumentations ``blur_limit``."""
    k = int(limit if isinstance(limit, (int, float)) else max(limit))
    return max(3, k if k % 2 else k - 1)


# --- containers ---------------------------------------------------------------------------------


@_register
def Compose(*, transforms: Sequence[nn.Module], p: float = 1.0) -> nn.Module:
    """All transforms in order, the whole applied to a sample with probability ``p``."""
    return ops.Compose(transforms, p=p)


@_register
def Sequential(*, transforms: Sequence[nn.Module], p: float = 0.5) -> nn.Module:
    """albumentations Sequential: Compose with a default p of 0.5."""
    return ops.Compose(transforms, p=p)


@_register
def OneOf(*, transforms: Sequence[nn.Module], p: float = 0.5) -> nn.Module:
    """One transform per sample, chosen with weights proportional to the transforms' own p."""
    return ops.OneOf(transforms, p=p)


@_register
def SomeOf(
    *, transforms: Sequence[nn.Module], n: int = 1, replace: bool = False, p: float = 1.0
) -> nn.Module:
    """``n`` transforms per sample."""
    return ops.SomeOf(transforms, n=n, replace=replace, p=p)


# --- deterministic: size, normalization, no-ops -------------------------------------------------


@_register
def Resize(
    *,
    height: int | None = None,
    width: int | None = None,
    size: int | Sequence[int] | None = None,
    side: str = "short",
    interpolation: int | str = 1,
    resample: str | None = None,
    antialias: bool = True,
    p: float = 1.0,
) -> nn.Module:
    """To ``height`` x ``width`` (or Kornia's ``size``: a pair, or an int for the ``side``)."""
    target = _size(height, width, size)
    return ops.Resize(
        target, side=side, interpolation=resample or interpolation, antialias=antialias, p=p
    )


@_register
def LongestMaxSize(
    *,
    max_size: int = 1024,
    interpolation: int | str = 1,
    resample: str | None = None,
    p: float = 1.0,
) -> nn.Module:
    """Scale so the longer side is ``max_size``, keeping the aspect ratio."""
    return ops.Resize(max_size, side="long", interpolation=resample or interpolation, p=p)


@_register
def SmallestMaxSize(
    *,
    max_size: int = 1024,
    interpolation: int | str = 1,
    resample: str | None = None,
    p: float = 1.0,
) -> nn.Module:
    """Scale so the shorter side is ``max_size``, keeping the aspect ratio."""
    return ops.Resize(max_size, side="short", interpolation=resample or interpolation, p=p)


@_register
def FitResize(
    *, max_height: int = 1024, max_width: int = 1024, interpolation: int | str = 1, p: float = 1.0
) -> nn.Module:
    """TorchOk's FitResize: fit inside the rectangle keeping the aspect ratio."""
    return ops.FitResize(max_height, max_width, interpolation=interpolation, p=p)


@_register
def CenterCrop(
    *,
    height: int | None = None,
    width: int | None = None,
    size: int | Sequence[int] | None = None,
    p: float = 1.0,
) -> nn.Module:
    """The central ``height`` x ``width`` (or ``size``)."""
    return ops.CenterCrop(_pair(_size(height, width, size)), p=p)


@_register
def Crop(
    *, x_min: int = 0, y_min: int = 0, x_max: int = 1024, y_max: int = 1024, p: float = 1.0
) -> nn.Module:
    return ops.Crop(x_min, y_min, x_max, y_max, p=p)


@_register
def PadIfNeeded(
    *,
    min_height: int = 1024,
    min_width: int = 1024,
    position: str = "center",
    border_mode: int = 0,
    value: float | None = None,
    mask_value: float | None = None,
    p: float = 1.0,
) -> nn.Module:
    """Pad to a minimum size with a constant (other ``border_mode``\\ s are padded constant too)."""
    del border_mode
    return ops.PadIfNeeded(
        min_height, min_width, position=position, value=value or 0, mask_value=mask_value or 0, p=p
    )


@_register
def Normalize(
    *,
    mean: float | Sequence[float] = (0.485, 0.456, 0.406),
    std: float | Sequence[float] = (0.229, 0.224, 0.225),
    max_pixel_value: float = 255.0,
    p: float = 1.0,
) -> nn.Module:
    """``(pixel - mean * max_pixel_value) / (std * max_pixel_value)``, as albumentations."""
    if p != 1.0:
        raise ValueError("Normalize must have p=1")
    return ops.Normalize(mean, std, max_pixel_value)


@_register
def ToTensorV2(*, transpose_mask: bool = False, p: float = 1.0) -> nn.Module:
    """A no-op: okc's samples are tensors from the start."""
    return ops.Identity()


@_register
def NoOp(*, p: float = 0.5) -> nn.Module:
    return ops.Identity()


@_register
def ToFloat(*, max_value: float | None = None, p: float = 1.0) -> nn.Module:
    """A no-op: okc's images are floats in [0, 1] before any transform."""
    return ops.Identity()


# --- geometric ------------------------------------------------------------------------------------


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
    """Swap rows and columns: a quarter turn then a horizontal flip (square images)."""
    turn = K.RandomRotation90(times=(1, 1), resample="nearest", p=1.0)
    return ops.Compose([turn, K.RandomHorizontalFlip(p=1.0)], p=p)


@_register
def RandomRotate90(*, p: float = 0.5) -> nn.Module:
    """0-3 quarter turns (square images keep their size)."""
    return K.RandomRotation90(times=(0, 3), resample="nearest", p=p)  # exact quarter turns


@_register
def Rotate(
    *,
    limit: float | Pair = 90,
    interpolation: int | str = 1,
    border_mode: int = 4,
    value: float | None = None,
    mask_value: float | None = None,
    p: float = 0.5,
) -> nn.Module:
    """Rotate by an angle in ``limit`` (degrees); borders are filled with zeros."""
    return K.RandomRotation(degrees=_range(limit), resample=_resample(interpolation, None), p=p)


@_register
def SafeRotate(
    *,
    limit: float | Pair = 90,
    interpolation: int | str = 1,
    border_mode: int = 4,
    value: float | None = None,
    mask_value: float | None = None,
    p: float = 0.5,
) -> nn.Module:
    """Approximated by Rotate (the corners may leave the image)."""
    return Rotate(limit=limit, interpolation=interpolation, border_mode=border_mode, p=p)


@_register
def ShiftScaleRotate(
    *,
    shift_limit: float | Pair = 0.0625,
    scale_limit: float | Pair = 0.1,
    rotate_limit: float | Pair = 45,
    interpolation: int | str = 1,
    border_mode: int = 4,
    value: float | None = None,
    mask_value: float | None = None,
    shift_limit_x: float | Pair | None = None,
    shift_limit_y: float | Pair | None = None,
    p: float = 0.5,
) -> nn.Module:
    """A random affine: shift (fraction of the size), scale ``1 ± scale_limit``, rotation."""
    shift_x = _range(shift_limit_x if shift_limit_x is not None else shift_limit)
    shift_y = _range(shift_limit_y if shift_limit_y is not None else shift_limit)
    return K.RandomAffine(
        degrees=_range(rotate_limit),
        translate=(max(map(abs, shift_x)), max(map(abs, shift_y))),
        scale=_range(scale_limit, around=1.0),
        resample=_resample(interpolation, None),
        p=p,
    )


@_register
def Affine(
    *,
    scale: float | Pair | None = None,
    translate_percent: float | Pair | None = None,
    rotate: float | Pair | None = None,
    shear: float | Pair | None = None,
    interpolation: int | str = 1,
    p: float = 0.5,
) -> nn.Module:
    """Random affine; ``translate_percent`` as a fraction of the size."""
    scale_range = (scale, scale) if isinstance(scale, (int, float)) else scale
    shift = None if translate_percent is None else max(map(abs, _range(translate_percent)))
    return K.RandomAffine(
        degrees=_range(rotate) if rotate is not None else 0.0,
        translate=None if shift is None else (shift, shift),
        scale=None if scale_range is None else tuple(scale_range),
        shear=_range(shear) if shear is not None else None,
        resample=_resample(interpolation, None),
        p=p,
    )


@_register
def Perspective(
    *, scale: float | Pair = (0.05, 0.1), interpolation: int | str = 1, p: float = 0.5
) -> nn.Module:
    """Random perspective; Kornia's distortion scale is taken as twice albumentations' top scale."""
    top = scale if isinstance(scale, (int, float)) else max(scale)
    return K.RandomPerspective(
        distortion_scale=min(1.0, 2 * float(top)), resample=_resample(interpolation, None), p=p
    )


@_register
def ElasticTransform(
    *, alpha: float = 1.0, sigma: float = 50.0, interpolation: int | str = 1, p: float = 0.5
) -> nn.Module:
    """Elastic deformation (Kornia's kernel-based version; approximate)."""
    kernel = 2 * math.ceil(3 * sigma) + 1
    return K.RandomElasticTransform(
        kernel_size=(kernel, kernel), sigma=(sigma, sigma), alpha=(alpha, alpha),
        resample=_resample(interpolation, None), p=p,
    )  # fmt: skip


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
    target = _pair(_size(height, width, size))
    pad = tuple(padding) if isinstance(padding, (list, tuple)) else padding
    return K.RandomCrop(
        target, padding=pad, pad_if_needed=pad_if_needed, fill=fill, padding_mode=padding_mode, p=p
    )


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
    target = _pair(_size(height, width, size))
    return K.RandomResizedCrop(
        target,
        scale=tuple(scale),
        ratio=tuple(ratio),
        resample=_resample(interpolation, resample),
        p=p,
    )


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
    """Approximated by RandomResizedCrop with an area scale from ``min_max_height`` / ``height``."""
    low, high = (min(1.0, (h / height) ** 2) for h in min_max_height)
    return K.RandomResizedCrop(
        (height, width), scale=(low, high), ratio=(w2h_ratio, w2h_ratio),
        resample=_resample(interpolation, None), p=p,
    )  # fmt: skip


@_register
def CoarseDropout(
    *,
    max_holes: int = 8,
    max_height: float = 8,
    max_width: float = 8,
    min_holes: int | None = None,
    min_height: float | None = None,
    min_width: float | None = None,
    fill_value: float = 0,
    mask_fill_value: float | None = None,
    p: float = 0.5,
) -> nn.Module:
    """Random rectangles filled with ``fill_value`` (0-255 units); sizes below 1 are fractions."""
    return ops.CoarseDropout(
        max_holes, max_height, max_width, min_holes, min_height, min_width, fill_value,
        mask_fill_value, p,
    )  # fmt: skip


@_register
def Cutout(
    *,
    num_holes: int = 8,
    max_h_size: int = 8,
    max_w_size: int = 8,
    fill_value: float = 0,
    p: float = 0.5,
) -> nn.Module:
    return ops.CoarseDropout(
        num_holes, max_h_size, max_w_size, None, None, None, fill_value, None, p
    )


# --- photometric --------------------------------------------------------------------------------


@_register
def ColorJitter(
    *,
    brightness: float | Pair = 0.2,
    contrast: float | Pair = 0.2,
    saturation: float | Pair = 0.2,
    hue: float | Pair = 0.2,
    same_on_batch: bool = False,
    p: float = 0.5,
) -> nn.Module:
    """Kornia's ColorJitter with albumentations' defaults (0.2 each, p=0.5)."""
    return K.ColorJitter(
        brightness=_tuple(brightness), contrast=_tuple(contrast), saturation=_tuple(saturation),
        hue=_tuple(hue), same_on_batch=same_on_batch, p=p,
    )  # fmt: skip


def _tuple(value: float | Pair) -> float | tuple[float, ...]:
    return value if isinstance(value, (int, float)) else tuple(value)


@_register
def RandomBrightnessContrast(
    *,
    brightness_limit: float | Pair = 0.2,
    contrast_limit: float | Pair = 0.2,
    brightness_by_max: bool = True,
    p: float = 0.5,
) -> nn.Module:
    """Add ``brightness_limit`` (fraction of the range), scale by ``1 ± contrast_limit``."""
    return ops.Compose(
        [
            K.RandomBrightness(brightness=_range(brightness_limit, around=1.0), p=1.0),
            K.RandomContrast(contrast=_range(contrast_limit, around=1.0), p=1.0),
        ],
        p=p,
    )


@_register
def RandomBrightness(
    *, limit: float | Pair | None = None, brightness: Pair | None = None, p: float | None = None
) -> nn.Module:
    """albumentations' ``limit`` (additive, p=0.5) or Kornia's ``brightness`` factors (p=1)."""
    factors = _range(limit, around=1.0) if limit is not None else tuple(brightness or (1.0, 1.0))
    return K.RandomBrightness(brightness=factors, p=_p(p, limit, brightness))


@_register
def RandomContrast(
    *, limit: float | Pair | None = None, contrast: Pair | None = None, p: float | None = None
) -> nn.Module:
    """albumentations' ``limit`` (p=0.5) or Kornia's ``contrast`` factors (p=1)."""
    factors = _range(limit, around=1.0) if limit is not None else tuple(contrast or (1.0, 1.0))
    return K.RandomContrast(contrast=factors, p=_p(p, limit, contrast))


@_register
def RandomGamma(
    *,
    gamma_limit: Pair | None = None,
    gamma: Pair | None = None,
    gain: Pair = (1.0, 1.0),
    eps: float | None = None,
    p: float | None = None,
) -> nn.Module:
    """albumentations' ``gamma_limit`` in percent (80, 120) (p=0.5) or Kornia's ``gamma`` (p=1)."""
    if gamma_limit is not None:
        factors = (gamma_limit[0] / 100, gamma_limit[1] / 100)
    else:
        factors = tuple(gamma or (1.0, 1.0))
    return K.RandomGamma(gamma=factors, gain=tuple(gain), p=_p(p, gamma_limit, gamma))


def _p(p: float | None, albumentations_style: Any, kornia_style: Any) -> float:
    """The default p of whichever library's parameters were used (albumentations: 0.5)."""
    if p is not None:
        return p
    return 1.0 if kornia_style is not None and albumentations_style is None else 0.5


@_register
def HueSaturationValue(
    *,
    hue_shift_limit: float | Pair = 20,
    sat_shift_limit: float | Pair = 30,
    val_shift_limit: float | Pair = 20,
    p: float = 0.5,
) -> nn.Module:
    """Approximated by ColorJitter: hue shifts in OpenCV's 0-180 units, the others in 0-255."""

    def top(limit: float | Pair, unit: float) -> float:
        return max(map(abs, _range(limit))) / unit

    return K.ColorJitter(
        brightness=top(val_shift_limit, 255), saturation=top(sat_shift_limit, 255),
        hue=min(0.5, top(hue_shift_limit, 180)), p=p,
    )  # fmt: skip


@_register
def RGBShift(
    *,
    r_shift_limit: float | Pair = 20,
    g_shift_limit: float | Pair = 20,
    b_shift_limit: float | Pair = 20,
    p: float = 0.5,
) -> nn.Module:
    """Shift each channel (0-255 units)."""

    def unit(limit: float | Pair) -> tuple[float, float]:
        low, high = _range(limit)
        return low / 255, high / 255

    return K.RandomRGBShift(
        r_shift_limit=unit(r_shift_limit), g_shift_limit=unit(g_shift_limit),
        b_shift_limit=unit(b_shift_limit), p=p,
    )  # fmt: skip


@_register
def GaussNoise(
    *,
    var_limit: float | Pair = (10.0, 50.0),
    mean: float = 0.0,
    per_channel: bool = True,
    p: float = 0.5,
) -> nn.Module:
    """Gaussian noise, variance per sample from ``var_limit`` (0-255 units)."""
    return ops.GaussNoise(var_limit, mean, per_channel, p)


@_register
def MultiplicativeNoise(
    *,
    multiplier: Pair = (0.9, 1.1),
    per_channel: bool = False,
    elementwise: bool = False,
    p: float = 0.5,
) -> nn.Module:
    return ops.MultiplicativeNoise(multiplier, per_channel, elementwise, p)


@_register
def ImageCompression(
    *,
    quality_lower: int = 99,
    quality_upper: int = 100,
    quality_range: Sequence[int] | None = None,
    compression_type: int | str = 0,
    p: float = 0.5,
) -> nn.Module:
    """JPEG compression with a quality drawn from the range (Kornia's differentiable JPEG)."""
    low, high = quality_range if quality_range is not None else (quality_lower, quality_upper)
    return K.RandomJPEG(jpeg_quality=(float(low), float(high)), p=p)


@_register
def JpegCompression(
    *, quality_lower: int = 99, quality_upper: int = 100, p: float = 0.5
) -> nn.Module:
    return K.RandomJPEG(jpeg_quality=(float(quality_lower), float(quality_upper)), p=p)


@_register
def Blur(*, blur_limit: int | Sequence[int] = 7, p: float = 0.5) -> nn.Module:
    """A box blur of the largest kernel ``blur_limit`` allows (albumentations draws one)."""
    k = _odd(blur_limit)
    return K.RandomBoxBlur(kernel_size=(k, k), p=p)


@_register
def GaussianBlur(
    *, blur_limit: int | Sequence[int] = (3, 7), sigma_limit: float | Pair = 0, p: float = 0.5
) -> nn.Module:
    """Gaussian blur; sigma from ``sigma_limit`` (0: 0.1-2.0)."""
    low, high = (
        _range(sigma_limit) if not isinstance(sigma_limit, (int, float)) else (0, sigma_limit)
    )
    sigma = (max(low, 0.1), high) if high > 0 else (0.1, 2.0)
    return K.RandomGaussianBlur(kernel_size=_odd(blur_limit), sigma=sigma, p=p)


@_register
def MedianBlur(*, blur_limit: int | Sequence[int] = 7, p: float = 0.5) -> nn.Module:
    k = _odd(blur_limit)
    return K.RandomMedianBlur(kernel_size=(k, k), p=p)


@_register
def MotionBlur(*, blur_limit: int | Sequence[int] = 7, p: float = 0.5) -> nn.Module:
    """Motion blur in a random direction."""
    return K.RandomMotionBlur(kernel_size=_odd(blur_limit), angle=180.0, direction=(-1.0, 1.0), p=p)


@_register
def CLAHE(
    *, clip_limit: float | Pair = 4.0, tile_grid_size: Sequence[int] = (8, 8), p: float = 0.5
) -> nn.Module:
    low, high = (1.0, float(clip_limit)) if isinstance(clip_limit, (int, float)) else clip_limit
    return K.RandomClahe(clip_limit=(low, high), grid_size=tuple(tile_grid_size), p=p)


@_register
def Sharpen(*, alpha: Pair = (0.2, 0.5), lightness: Pair = (0.5, 1.0), p: float = 0.5) -> nn.Module:
    """Approximated by Kornia's RandomSharpness with ``alpha`` as the sharpness range."""
    return K.RandomSharpness(sharpness=(float(alpha[0]), float(alpha[1])), p=p)


@_register
def ChannelShuffle(*, p: float = 0.5) -> nn.Module:
    return K.RandomChannelShuffle(p=p)


@_register
def ChannelDropout(
    *, channel_drop_range: Sequence[int] = (1, 1), fill_value: float = 0, p: float = 0.5
) -> nn.Module:
    """Zero ``channel_drop_range[1]`` channels (fill in 0-255 units)."""
    return K.RandomChannelDropout(
        num_drop_channels=int(channel_drop_range[1]), fill_value=fill_value / 255, p=p
    )


@_register
def ToGray(*, p: float = 0.5) -> nn.Module:
    return K.RandomGrayscale(p=p)


@_register
def Equalize(*, mode: str = "cv", by_channels: bool = True, p: float = 0.5) -> nn.Module:
    return K.RandomEqualize(p=p)


@_register
def InvertImg(*, p: float = 0.5) -> nn.Module:
    return K.RandomInvert(p=p)


@_register
def Posterize(*, num_bits: int | Sequence[int] = 4, p: float = 0.5) -> nn.Module:
    bits = float(num_bits) if isinstance(num_bits, int) else tuple(float(b) for b in num_bits)
    return K.RandomPosterize(bits=bits, p=p)


@_register
def Solarize(*, threshold: float | Pair = 128, p: float = 0.5) -> nn.Module:
    """Invert pixels above ``threshold`` (0-255 units)."""
    low, high = (threshold, threshold) if isinstance(threshold, (int, float)) else threshold
    return K.RandomSolarize(thresholds=(low / 255, high / 255), additions=(0.0, 0.0), p=p)


# --- the pipeline's view -------------------------------------------------------------------------


def split_transform(built: Sequence[nn.Module]) -> tuple[list[nn.Module], list[nn.Module]]:
    """``transform`` ops run per sample on the CPU (size ops) and on the batch (the rest)."""
    per_sample = [op for op in built if ops.runs_per_sample(op)]
    batched = [
        op for op in built if not ops.runs_per_sample(op) and not isinstance(op, ops.Identity)
    ]
    return per_sample, batched
