"""The albumentations photometric, noise, blur and dropout ops, registered under their names.

Each adapter takes albumentations' (1.3.0) parameters with its defaults. Kornia does the op where
its semantics match (ColorJitter, RGBShift, CLAHE, ToGray, ...); okc's own batched ops
(``okc.data.photometric``, ``okc.data.ops``) do it where Kornia's differ (per-sample kernel sizes,
OpenCV's HSV shifts, albumentations' brightness/contrast formula, ...). Pixel-valued parameters
are in albumentations' 0-255 units. A value okc does not implement is refused (``ParamError``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import kornia.augmentation as K
from torch import nn

from okc.data import ops, photometric
from okc.data.albu_params import Pair, int_range, to_tuple
from okc.errors import ParamError
from okc.registry import AUGMENTATIONS

_register = AUGMENTATIONS.register


def _tuple(value: float | Pair) -> float | tuple[float, ...]:
    return value if isinstance(value, (int, float)) else tuple(value)


def _p(p: float | None, albumentations_style: object, kornia_style: object) -> float:
    """The default p of whichever library's parameters were used (albumentations: 0.5)."""
    if p is not None:
        return p
    return 1.0 if kornia_style is not None and albumentations_style is None else 0.5


def _neither_both(a: object, b: object, names: tuple[str, str]) -> None:
    if a is not None and b is not None:
        raise ParamError(names[1], f"set {names[0]} or {names[1]}, not both")


# --- deterministic ----------------------------------------------------------------------------


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
        raise ParamError("p", "Normalize must have p=1")
    return ops.Normalize(mean, std, max_pixel_value)


@_register
def ToTensorV2(*, transpose_mask: bool = False, p: float = 1.0) -> nn.Module:
    """A no-op: okc's samples are tensors from the start, masks (H, W) with no channel axis to
    move (``transpose_mask``), and albumentations always applies it (``p`` has no effect)."""
    return ops.Identity()


@_register
def NoOp(*, p: float = 0.5) -> nn.Module:
    """Does nothing, whatever ``p`` says."""
    return ops.Identity()


@_register
def ToFloat(*, max_value: float | None = None, p: float = 1.0) -> nn.Module:
    """``pixel / max_value``; okc's images are floats in [0, 1] already, so the default (the
    uint8 maximum, 255) is a no-op and another ``max_value`` rescales."""
    if p != 1.0:
        raise ParamError("p", "ToFloat must have p=1 (it sets the value range of every image)")
    if max_value is None or max_value == 255:
        return ops.Identity()
    if max_value <= 0:
        raise ParamError("max_value", f"must be positive, got {max_value}")
    return photometric.ToFloat(max_value)


# --- colour -----------------------------------------------------------------------------------


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


@_register
def RandomBrightnessContrast(
    *,
    brightness_limit: float | Pair = 0.2,
    contrast_limit: float | Pair = 0.2,
    brightness_by_max: bool = True,
    p: float = 0.5,
) -> nn.Module:
    """``image * (1 + U(contrast_limit)) + U(brightness_limit)`` of the range (or of the image's
    mean, scaled by the contrast factor, with ``brightness_by_max=False``)."""
    return photometric.BrightnessContrast(
        to_tuple(brightness_limit, key="brightness_limit"),
        to_tuple(contrast_limit, key="contrast_limit"), brightness_by_max, p,
    )  # fmt: skip


@_register
def RandomBrightness(
    *, limit: float | Pair | None = None, brightness: Pair | None = None, p: float | None = None
) -> nn.Module:
    """albumentations' ``limit`` (additive, p=0.5) or Kornia's ``brightness`` factors (p=1)."""
    _neither_both(limit, brightness, ("limit", "brightness"))
    if brightness is not None:
        return K.RandomBrightness(brightness=tuple(brightness), p=_p(p, limit, brightness))
    limits = to_tuple(0.2 if limit is None else limit, key="limit")
    return photometric.BrightnessContrast(limits, (0.0, 0.0), True, _p(p, limit, brightness))


@_register
def RandomContrast(
    *, limit: float | Pair | None = None, contrast: Pair | None = None, p: float | None = None
) -> nn.Module:
    """albumentations' ``limit`` (p=0.5) or Kornia's ``contrast`` factors (p=1)."""
    _neither_both(limit, contrast, ("limit", "contrast"))
    if contrast is not None:
        return K.RandomContrast(contrast=tuple(contrast), p=_p(p, limit, contrast))
    limits = to_tuple(0.2 if limit is None else limit, key="limit")
    return photometric.BrightnessContrast((0.0, 0.0), limits, True, _p(p, limit, contrast))


@_register
def RandomGamma(
    *,
    gamma_limit: float | Pair | None = None,
    gamma: Pair | None = None,
    gain: Pair = (1.0, 1.0),
    eps: float | None = None,
    p: float | None = None,
) -> nn.Module:
    """albumentations' ``gamma_limit`` in percent (80, 120) (p=0.5) or Kornia's ``gamma`` (p=1);
    ``gain`` multiplies (Kornia's)."""
    _neither_both(gamma_limit, gamma, ("gamma_limit", "gamma"))
    if eps is not None:
        warnings.warn(
            "RandomGamma: eps has no effect (albumentations deprecated it and ignores it too)",
            stacklevel=2,
        )
    if gamma is not None:
        factors = (float(gamma[0]), float(gamma[1]))
    else:
        low, high = to_tuple((80, 120) if gamma_limit is None else gamma_limit, key="gamma_limit")
        factors = (low / 100, high / 100)
    if factors[0] <= 0:
        raise ParamError("gamma_limit" if gamma is None else "gamma", "gamma must be positive")
    return K.RandomGamma(gamma=factors, gain=tuple(gain), p=_p(p, gamma_limit, gamma))


@_register
def HueSaturationValue(
    *,
    hue_shift_limit: float | Pair = 20,
    sat_shift_limit: float | Pair = 30,
    val_shift_limit: float | Pair = 20,
    p: float = 0.5,
) -> nn.Module:
    """OpenCV-HSV shifts: hue in 0-180 units, saturation and value in 0-255 units."""
    return photometric.HueSaturationValue(
        to_tuple(hue_shift_limit, key="hue_shift_limit"),
        to_tuple(sat_shift_limit, key="sat_shift_limit"),
        to_tuple(val_shift_limit, key="val_shift_limit"), p,
    )  # fmt: skip


@_register
def RGBShift(
    *,
    r_shift_limit: float | Pair = 20,
    g_shift_limit: float | Pair = 20,
    b_shift_limit: float | Pair = 20,
    p: float = 0.5,
) -> nn.Module:
    """Shift each channel by its own U(limit) (0-255 units)."""

    def unit(limit: float | Pair, key: str) -> tuple[float, float]:
        low, high = to_tuple(limit, key=key)
        return low / 255, high / 255

    return K.RandomRGBShift(
        r_shift_limit=unit(r_shift_limit, "r_shift_limit"),
        g_shift_limit=unit(g_shift_limit, "g_shift_limit"),
        b_shift_limit=unit(b_shift_limit, "b_shift_limit"), p=p,
    )  # fmt: skip


@_register
def FancyPCA(*, alpha: float = 0.1, p: float = 0.5) -> nn.Module:
    """AlexNet's PCA colour noise: per sample one N(0, alpha) factor on the eigen decomposition
    of the image's RGB covariance."""
    return photometric.FancyPCA(alpha, p)


@_register
def ChannelShuffle(*, p: float = 0.5) -> nn.Module:
    """A random channel permutation per sample."""
    return K.RandomChannelShuffle(p=p)


@_register
def ChannelDropout(
    *, channel_drop_range: Sequence[int] = (1, 1), fill_value: float = 0, p: float = 0.5
) -> nn.Module:
    """Fill ``randint(channel_drop_range)`` random channels per sample (0-255 units)."""
    low, high = int_range(channel_drop_range, low=1, key="channel_drop_range")
    return photometric.ChannelDropout((low, high), fill_value, p)


@_register
def ToGray(*, p: float = 0.5) -> nn.Module:
    return K.RandomGrayscale(p=p)


@_register
def Equalize(*, mode: str = "cv", by_channels: bool = True, p: float = 0.5) -> nn.Module:
    """Histogram equalization, OpenCV's or Pillow's (``mode``), per channel or of the luma."""
    return photometric.Equalize(mode, by_channels, p)


@_register
def InvertImg(*, p: float = 0.5) -> nn.Module:
    return K.RandomInvert(p=p)


@_register
def Posterize(
    *, num_bits: int | Sequence[int] | Sequence[Sequence[int]] = 4, p: float = 0.5
) -> nn.Module:
    """Keep the high ``num_bits`` bits: a number is fixed, a pair a range, three values one per
    RGB channel, each a pair or a number ``b`` meaning the range (0, b) (albumentations 1.3.0's
    ``to_tuple(b, 0)``)."""
    if isinstance(num_bits, int):
        ranges = [(num_bits, num_bits)]
    elif len(num_bits) == 3:
        ranges = [int_range(b, low=0, key="num_bits") for b in num_bits]
    else:
        ranges = [int_range(num_bits, low=0, key="num_bits")]  # type: ignore[arg-type]
    return photometric.Posterize(ranges, p)


@_register
def Solarize(*, threshold: float | Pair = 128, p: float = 0.5) -> nn.Module:
    """Invert pixels at or above a threshold drawn from ``threshold`` (0-255 units)."""
    if isinstance(threshold, (int, float)):
        low, high = float(threshold), float(threshold)
    else:
        low, high = to_tuple(threshold, key="threshold")
    return K.RandomSolarize(thresholds=(low / 255, high / 255), additions=(0.0, 0.0), p=p)


@_register
def CLAHE(
    *, clip_limit: float | Pair = 4.0, tile_grid_size: Sequence[int] = (8, 8), p: float = 0.5
) -> nn.Module:
    """Contrast-limited adaptive equalization of the lightness, clip limit from ``clip_limit``
    ((1, x) for x)."""
    low, high = to_tuple(clip_limit, low=1, key="clip_limit")
    return photometric.Clahe((low, high), (int(tile_grid_size[0]), int(tile_grid_size[1])), p)


@_register
def Sharpen(*, alpha: Pair = (0.2, 0.5), lightness: Pair = (0.5, 1.0), p: float = 0.5) -> nn.Module:
    """Blend with a 3x3 sharpening whose centre is ``8 + lightness``; ``alpha`` is its weight."""
    alphas = to_tuple(alpha, low=0.0, key="alpha")
    lightnesses = to_tuple(lightness, low=0.0, key="lightness")
    if not 0 <= alphas[0] <= alphas[1] <= 1:
        raise ParamError("alpha", f"needs 0 <= low <= high <= 1, got {alpha}")
    if not 0 <= lightnesses[0] <= lightnesses[1]:
        raise ParamError("lightness", f"needs 0 <= low <= high, got {lightness}")
    return photometric.Sharpen(alphas, lightnesses, p)


# --- noise and compression --------------------------------------------------------------------


@_register
def GaussNoise(
    *,
    var_limit: float | Pair = (10.0, 50.0),
    mean: float = 0.0,
    per_channel: bool = True,
    p: float = 0.5,
) -> nn.Module:
    """Gaussian noise, variance per sample from ``var_limit`` (0-255 units; x means (0, x))."""
    limits = (0.0, float(var_limit)) if isinstance(var_limit, (int, float)) else tuple(var_limit)
    if min(limits) < 0:
        raise ParamError("var_limit", f"variances must not be negative, got {var_limit}")
    return ops.GaussNoise(limits, mean, per_channel, p)


@_register
def MultiplicativeNoise(
    *,
    multiplier: float | Pair = (0.9, 1.1),
    per_channel: bool = False,
    elementwise: bool = False,
    p: float = 0.5,
) -> nn.Module:
    """Multiply by U(multiplier) per sample (and per channel, per pixel if asked)."""
    limits = to_tuple(multiplier, low=multiplier if isinstance(multiplier, (int, float)) else None,
                      key="multiplier")  # fmt: skip
    return ops.MultiplicativeNoise(limits, per_channel, elementwise, p)


_JPEG = (0, "jpeg", "JPEG", ".jpg")


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
    if compression_type not in _JPEG:
        raise ParamError(
            "compression_type",
            f"{compression_type!r}: only JPEG (0) is supported; WebP (1) is not implemented",
        )
    return JpegCompression(
        quality_lower=quality_range[0] if quality_range is not None else quality_lower,
        quality_upper=quality_range[1] if quality_range is not None else quality_upper, p=p,
    )  # fmt: skip


@_register
def JpegCompression(
    *, quality_lower: int = 99, quality_upper: int = 100, p: float = 0.5
) -> nn.Module:
    if not 0 <= quality_lower <= quality_upper <= 100:
        raise ParamError("quality_lower", "needs 0 <= quality_lower <= quality_upper <= 100")
    # Kornia's JPEG needs quality >= 1: 0 and 1 compress alike.
    low, high = max(1.0, float(quality_lower)), max(1.0, float(quality_upper))
    return K.RandomJPEG(jpeg_quality=(low, high), p=p)


# --- blurs ------------------------------------------------------------------------------------


@_register
def Blur(*, blur_limit: int | Sequence[int] = 7, p: float = 0.5) -> nn.Module:
    """A box blur, kernel size per sample from ``blur_limit`` (x means 3, 5, ..., x)."""
    return photometric.Blur(int_range(blur_limit, low=3, key="blur_limit"), p)


@_register
def GaussianBlur(
    *,
    blur_limit: int | Sequence[int] = (3, 7),
    sigma_limit: float | Pair = 0,
    p: float = 0.5,
) -> nn.Module:
    """Gaussian blur: odd kernel size from ``blur_limit`` (0: from sigma), sigma from
    ``sigma_limit`` (0: from the kernel size), per sample, as cv2.GaussianBlur."""
    low, high = int_range(blur_limit, low=0, key="blur_limit")
    sigma = to_tuple(sigma_limit, low=0, key="sigma_limit")
    if low == 0 and sigma[0] == 0:  # albumentations: kernel size 0 needs a sigma
        low, high = 3, max(3, high)
    return photometric.GaussianBlur((low, high), sigma, p)


@_register
def MedianBlur(*, blur_limit: int | Sequence[int] = 7, p: float = 0.5) -> nn.Module:
    """Median filter, odd aperture per sample from ``blur_limit``."""
    return photometric.MedianBlur(int_range(blur_limit, low=3, key="blur_limit"), p)


@_register
def MotionBlur(
    *, blur_limit: int | Sequence[int] = 7, allow_shifted: bool = True, p: float = 0.5
) -> nn.Module:
    """A random line kernel per sample (centred unless ``allow_shifted``)."""
    return photometric.MotionBlur(int_range(blur_limit, low=3, key="blur_limit"), allow_shifted, p)


# --- dropout ----------------------------------------------------------------------------------


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
    """Random rectangles filled with ``fill_value`` (0-255 units); sizes below 1 are fractions;
    ``mask_fill_value`` cuts the label maps too."""
    if not 0 < (min_holes or max_holes) <= max_holes:
        raise ParamError("min_holes", f"needs 0 < min_holes <= max_holes, got {min_holes}")
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
