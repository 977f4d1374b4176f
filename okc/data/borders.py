"""OpenCV's border modes on batches: padding and remapping as albumentations does them with
``cv2.copyMakeBorder``, ``cv2.warpAffine`` and ``cv2.remap``, as torch ops on the device.

Border codes are cv2's (albumentations configs write them as integers): ``BORDER_CONSTANT`` 0
(fill with a value), ``BORDER_REPLICATE`` 1 (``aaa|abcd|ddd``), ``BORDER_REFLECT`` 2
(``cba|abcd|dcb``), ``BORDER_WRAP`` 3 (``bcd|abcd|abc``) and ``BORDER_REFLECT_101`` 4
(``dcb|abcd|cba``, cv2's default). Padding gathers indices, so any pad width works (torch's own
reflect padding stops at the image size). Remapping uses ``grid_sample``, whose ``border`` and
``reflection`` padding are exactly cv2's replicate and reflect modes (reflect-101 is reflection
about the outer pixel centres, ``align_corners=True``); wrap folds the coordinates onto a
circularly padded copy, and a constant border samples ``image - value`` with zero padding, which
gives cv2's blend of edge pixels with the value.

Coordinates in sampling grids are cv2's: pixel ``j`` has its centre at ``j``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from okc.errors import OkcError, ParamError

BORDER_CONSTANT, BORDER_REPLICATE, BORDER_REFLECT, BORDER_WRAP, BORDER_REFLECT_101 = range(5)
BORDER_NAMES = {
    BORDER_CONSTANT: "BORDER_CONSTANT",
    BORDER_REPLICATE: "BORDER_REPLICATE",
    BORDER_REFLECT: "BORDER_REFLECT",
    BORDER_WRAP: "BORDER_WRAP",
    BORDER_REFLECT_101: "BORDER_REFLECT_101",
}
_ALIASES = {
    "constant": BORDER_CONSTANT,
    "replicate": BORDER_REPLICATE,
    "edge": BORDER_REPLICATE,
    "reflect": BORDER_REFLECT,
    "symmetric": BORDER_REFLECT,
    "wrap": BORDER_WRAP,
    "reflect_101": BORDER_REFLECT_101,
    "reflect101": BORDER_REFLECT_101,
}

Fill = float | Sequence[float] | None


def border_mode(value: int | str, *, key: str = "border_mode") -> int:
    """cv2's border code for ``value`` (a code, or a name such as ``"reflect_101"``)."""
    code = _ALIASES.get(value.lower().removeprefix("border_")) if isinstance(value, str) else value
    if isinstance(code, bool) or code not in BORDER_NAMES:
        supported = ", ".join(f"{c} ({n})" for c, n in BORDER_NAMES.items())
        raise ParamError(key, f"unsupported border mode {value!r}; supported: {supported}")
    return int(code)


def fill_tensor(value: Fill, like: torch.Tensor, *, scale: float) -> torch.Tensor:
    """A fill value as a (1, C, 1, 1) or scalar tensor in ``like``'s units: ``scale`` converts
    albumentations' 0-255 values to okc's [0, 1] images (1 for label maps)."""
    if value is None:
        value = 0.0
    fill = torch.as_tensor(value, dtype=torch.float32, device=like.device) / scale
    if fill.dim() == 0:
        return fill.to(like.dtype) if like.is_floating_point() else fill.round().to(like.dtype)
    if fill.numel() != like.shape[-3]:
        raise OkcError(
            f"value: {fill.numel()} fill values for an image of {like.shape[-3]} channels"
        )
    fill = fill.view(-1, 1, 1)
    return fill.to(like.dtype) if like.is_floating_point() else fill.round().to(like.dtype)


def _index(size: int, before: int, after: int, border: int, device: torch.device) -> torch.Tensor:
    """Source indices of a padded axis; -1 where a constant border fills."""
    i = torch.arange(-before, size + after, device=device)
    if border == BORDER_CONSTANT:
        return torch.where((i >= 0) & (i < size), i, -1)
    if border == BORDER_REPLICATE or size == 1:
        return i.clamp(0, size - 1)
    if border == BORDER_WRAP:
        return i.remainder(size)
    period = 2 * size if border == BORDER_REFLECT else 2 * size - 2
    i = i.remainder(period)
    return torch.where(i < size, i, period - 1 - i if border == BORDER_REFLECT else period - i)


def pad(
    image: torch.Tensor,
    top: int,
    bottom: int,
    left: int,
    right: int,
    *,
    border: int,
    fill: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """``cv2.copyMakeBorder`` on the last two dims of any dtype, pads of any width."""
    if not (top or bottom or left or right):
        return image
    height, width = image.shape[-2:]
    rows = _index(height, top, bottom, border, image.device)
    cols = _index(width, left, right, border, image.device)
    out = image[..., rows.clamp(min=0), :][..., cols.clamp(min=0)]  # faster than index_select
    if border != BORDER_CONSTANT:
        return out
    outside = (rows[:, None] < 0) | (cols[None, :] < 0)
    return torch.where(outside, torch.as_tensor(fill, dtype=image.dtype, device=image.device), out)


def remap(
    image: torch.Tensor,
    grid: torch.Tensor,
    *,
    resample: str,
    border: int,
    fill: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """``cv2.remap``: output pixel (i, j) of each image samples ``image`` at ``grid[b, i, j]``
    (x, y in pixel-centre coordinates) with ``resample`` (nearest, bilinear, bicubic)."""
    height, width = image.shape[-2:]
    x, y = grid[..., 0], grid[..., 1]
    corners, padding = False, "zeros"
    if border == BORDER_WRAP:
        image = pad(image, 2, 2, 2, 2, border=BORDER_WRAP)
        x, y = x.remainder(width) + 2, y.remainder(height) + 2
        height, width, padding = height + 4, width + 4, "border"
    elif border == BORDER_REPLICATE:
        padding = "border"
    elif border == BORDER_REFLECT:
        padding = "reflection"
    elif border == BORDER_REFLECT_101 and min(height, width) > 1:
        corners, padding = True, "reflection"
    elif border == BORDER_REFLECT_101:  # one row or column: reflecting about it replicates it
        padding = "border"
    if corners:
        normalized = torch.stack([2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1], dim=-1)
    else:
        normalized = torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1)
    source = image - fill if border == BORDER_CONSTANT else image
    out = F.grid_sample(
        source, normalized.to(image.dtype), mode=resample, padding_mode=padding,
        align_corners=corners,
    )  # fmt: skip
    return out + fill if border == BORDER_CONSTANT else out


def pixel_grid(batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """(B, H, W, 2) pixel-centre coordinates (x, y) of every output pixel: the identity map."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs, ys], dim=-1).expand(batch, height, width, 2)
