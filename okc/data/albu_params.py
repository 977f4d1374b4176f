"""albumentations' (1.3.0) parameter conventions, shared by the adapters in ``albu_*.py``.

Each helper turns one config value into what okc's ops take, and raises ``ParamError`` (the
build reports it at the parameter's key path) for values okc does not implement, so no accepted
parameter is ever dropped without a word.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from okc.data import borders
from okc.data.ops import kornia_resample
from okc.errors import ParamError

Pair = Sequence[float]
Range = tuple[float, float]


def to_tuple(
    value: float | Pair, *, low: float | None = None, bias: float | None = None, key: str
) -> Range:
    """albumentations' ``to_tuple``: a number ``x`` is ``(-x, x)``, or ``(low, x)`` sorted when
    ``low`` is given; a pair stays as it is; ``bias`` is added to both ends."""
    if isinstance(value, bool):
        raise ParamError(key, f"expected a number or a pair, got {value!r}")
    if isinstance(value, (int, float)):
        pair = (-value, value) if low is None else tuple(sorted((low, value)))
    elif isinstance(value, Sequence) and len(value) == 2:
        pair = (value[0], value[1])
    else:
        raise ParamError(key, f"expected a number or a pair, got {value!r}")
    offset = bias or 0.0
    return float(pair[0]) + offset, float(pair[1]) + offset


def int_range(value: int | Sequence[int], *, low: int, key: str) -> tuple[int, int]:
    lo, hi = to_tuple(value, low=low, key=key)
    return int(lo), int(hi)


def fixed_or_range(value: float | Pair, *, key: str) -> Range:
    """albumentations' ``to_tuple(x, x)``: a number is that value, a pair a range."""
    return to_tuple(value, low=value if isinstance(value, (int, float)) else None, key=key)


def axis_ranges(value: float | Pair | Mapping[str, Any], *, default: float, key: str) -> dict:
    """albumentations' Affine arguments: a number (fixed), a pair (a range) or ``{x:, y:}``,
    each axis drawn on its own."""
    if isinstance(value, Mapping):
        unknown = set(value) - {"x", "y"}
        if unknown or not value:
            raise ParamError(key, f"a mapping takes the keys x and/or y, got {sorted(value)}")
        return {axis: fixed_or_range(value.get(axis, default), key=key) for axis in ("x", "y")}
    pair = fixed_or_range(value, key=key)
    return {"x": pair, "y": pair}


def resample(interpolation: int | str, *, key: str = "interpolation") -> str:
    """Kornia/grid_sample's name for a cv2 interpolation code (area and Lanczos approximated by
    bilinear and bicubic, as ``okc.data.ops`` documents)."""
    try:
        return kornia_resample(interpolation)
    except ValueError as err:
        raise ParamError(key, str(err)) from None


def border(value: int | str, *, key: str = "border_mode") -> int:
    return borders.border_mode(value, key=key)


def nearest_only(value: int | str, *, key: str) -> None:
    """Label maps are resampled nearest: other interpolations would blend label values."""
    if resample(value, key=key) != "nearest":
        raise ParamError(
            key, f"{value!r}: label maps are resampled nearest only (0) so labels never blend"
        )


def full_probability(p: float, what: str) -> None:
    """Ops that change the image size apply to every sample: a batch holds one size."""
    if p != 1.0:
        raise ParamError("p", f"{what} changes the image size and must have p=1 (got {p})")


def warp_args(
    interpolation: int | str,
    border_mode: int | str,
    value: borders.Fill,
    mask_value: borders.Fill,
    p: float,
    *,
    border_key: str = "border_mode",
) -> dict[str, Any]:
    """The keyword arguments every ``okc.data.warps.Warp`` takes, checked."""
    resample(interpolation)
    return {
        "interpolation": interpolation,
        "border_mode": border(border_mode, key=border_key),
        "value": value,
        "mask_value": mask_value,
        "p": p,
    }
