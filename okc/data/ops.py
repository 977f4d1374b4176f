"""Batch operations okc adds around Kornia: containers, size-fixing ops, normalization, noise.

Every op maps ``(image, masks) -> (image, masks)``. On the device ``image`` is float (B,C,H,W) in
[0, 1] (normalized after ``Normalize``) and ``masks`` a list of float (B,1,H,W) label maps that
geometric ops move with the image and photometric ops leave alone. Size ops (``per_sample = True``)
also run on one uint8 (C,H,W) sample with int64 (1,H,W) masks on the CPU, before batching: that
is what makes differently-sized images batchable.

Random choices are made per sample, as albumentations does; containers apply a child to the
samples that drew it (``index_select``; one host sync to learn how many did).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import kornia.augmentation as K
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn
from torchvision.transforms import InterpolationMode

from okc.errors import OkcError

Masks = list[torch.Tensor]

# albumentations/cv2 interpolation codes and names, to torchvision's modes for tensors.
_INTERPOLATION = {
    0: InterpolationMode.NEAREST,
    1: InterpolationMode.BILINEAR,
    2: InterpolationMode.BICUBIC,
    3: InterpolationMode.BILINEAR,  # cv2 INTER_AREA: bilinear with antialias is the tensor analogue
    4: InterpolationMode.BICUBIC,  # cv2 INTER_LANCZOS4
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "linear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "cubic": InterpolationMode.BICUBIC,
    "area": InterpolationMode.BILINEAR,
}


def to_interpolation(value: int | str) -> InterpolationMode:
    key = value.lower() if isinstance(value, str) else value
    if key not in _INTERPOLATION:
        names = ", ".join(str(k) for k in _INTERPOLATION)
        raise ValueError(f"unknown interpolation {value!r}; use one of {names}")
    return _INTERPOLATION[key]


def kornia_resample(value: int | str) -> str:
    """A Kornia ``resample`` name for an albumentations interpolation code or a name."""
    mode = to_interpolation(value)
    return {InterpolationMode.NEAREST: "nearest", InterpolationMode.BICUBIC: "bicubic"}.get(
        mode, "bilinear"
    )


class BatchOp(nn.Module):
    """An op of okc's own; ``p`` is its per-sample probability (containers read it as a weight)."""

    per_sample = False  # True: deterministic and size-changing; runs per sample before batching
    p = 1.0

    def forward(self, image: torch.Tensor, masks: Masks) -> tuple[torch.Tensor, Masks]:
        raise NotImplementedError


def is_kornia(op: nn.Module) -> bool:
    return isinstance(op, (K.AugmentationBase2D, K.ImageSequential))


class KorniaOps(BatchOp):
    """Consecutive Kornia ops in one ``AugmentationSequential``: masks follow geometric ops."""

    def __init__(self, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.seq = K.AugmentationSequential(*ops)

    def forward(self, image: torch.Tensor, masks: Masks) -> tuple[torch.Tensor, Masks]:
        if not masks:
            return self.seq(image), []
        out = self.seq(image, *masks, data_keys=["input"] + ["mask"] * len(masks))
        return out[0], list(out[1:])


class Chain(BatchOp):
    """Ops in order; runs of Kornia ops share one AugmentationSequential."""

    def __init__(self, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        grouped: list[nn.Module] = []
        run: list[nn.Module] = []
        for op in [*ops, None]:
            if op is not None and is_kornia(op):
                run.append(op)
                continue
            if run:
                grouped.append(KorniaOps(run))
                run = []
            if op is not None:
                grouped.append(op)
        self.ops = nn.ModuleList(grouped)

    def forward(self, image: torch.Tensor, masks: Masks) -> tuple[torch.Tensor, Masks]:
        for op in self.ops:
            image, masks = op(image, masks)
        return image, masks


def _force(op: nn.Module) -> tuple[nn.Module, float]:
    """The op set to always apply, and the probability it had (a container's weight for it)."""
    p = float(getattr(op, "p", 1.0))
    op.p = 1.0
    return op, p


def apply_to(
    op: nn.Module, image: torch.Tensor, masks: Masks, chosen: torch.Tensor
) -> tuple[torch.Tensor, Masks]:
    """Apply ``op`` to the samples where ``chosen`` (bool, B) is true."""
    index = chosen.nonzero().squeeze(1)  # sync point: the subset's size decides the shapes
    if index.numel() == 0:
        return image, masks
    if index.numel() == image.shape[0]:
        return op(image, masks)
    sub_image, sub_masks = op(
        image.index_select(0, index), [m.index_select(0, index) for m in masks]
    )
    if sub_image.shape[1:] != image.shape[1:]:
        raise OkcError(
            f"{op} changes the image size but applies to only some samples (p < 1): "
            "set its p to 1, or move it out of OneOf/SomeOf"
        )
    image = image.index_copy(0, index, sub_image)
    return image, [m.index_copy(0, index, s) for m, s in zip(masks, sub_masks, strict=True)]


def _as_op(op: nn.Module) -> nn.Module:
    return KorniaOps([op]) if is_kornia(op) else op


class OneOf(BatchOp):
    """Per sample, with probability ``p``, one child chosen with weights proportional to its p."""

    def __init__(self, transforms: Sequence[nn.Module], p: float = 0.5) -> None:
        super().__init__()
        if not transforms:
            raise ValueError("OneOf needs at least one transform")
        forced = [_force(op) for op in transforms]
        self.children_ = nn.ModuleList(_as_op(op) for op, _ in forced)
        weights = torch.tensor([w for _, w in forced], dtype=torch.float32)
        self.register_buffer(
            "weights", weights / weights.sum() if weights.sum() > 0 else weights + 1
        )
        self.p = p

    def forward(self, image: torch.Tensor, masks: Masks) -> tuple[torch.Tensor, Masks]:
        batch = image.shape[0]
        apply = torch.rand(batch, device=image.device) < self.p
        choice = torch.multinomial(self.weights.to(image.device), batch, replacement=True)
        for k, op in enumerate(self.children_):
            image, masks = apply_to(op, image, masks, apply & (choice == k))
        return image, masks


class SomeOf(BatchOp):
    """Per sample, with probability ``p``, ``n`` distinct children (in their listed order)."""

    def __init__(
        self, transforms: Sequence[nn.Module], n: int = 1, replace: bool = False, p: float = 1.0
    ) -> None:
        super().__init__()
        if not 1 <= n <= len(transforms) and not replace:
            raise ValueError(f"SomeOf: n={n} but {len(transforms)} transforms")
        self.children_ = nn.ModuleList(_as_op(_force(op)[0]) for op in transforms)
        self.n, self.replace, self.p = n, replace, p

    def forward(self, image: torch.Tensor, masks: Masks) -> tuple[torch.Tensor, Masks]:
        batch, count = image.shape[0], len(self.children_)
        apply = torch.rand(batch, device=image.device) < self.p
        if self.replace:
            picks = torch.randint(count, (batch, self.n), device=image.device)
        else:
            picks = torch.rand(batch, count, device=image.device).argsort(1)[:, : self.n]
        chosen = F.one_hot(picks, count).amax(1).bool() & apply[:, None]
        for k, op in enumerate(self.children_):
            image, masks = apply_to(op, image, masks, chosen[:, k])
        return image, masks


class Compose(BatchOp):
    """Children in order (each with its own p), the whole with probability ``p`` per sample."""

    def __init__(self, transforms: Sequence[nn.Module], p: float = 1.0) -> None:
        super().__init__()
        self.chain = Chain(transforms)
        self.p = p

    def forward(self, image: torch.Tensor, masks: Masks) -> tuple[torch.Tensor, Masks]:
        if self.p >= 1.0:
            return self.chain(image, masks)
        return apply_to(
            self.chain, image, masks, torch.rand(image.shape[0], device=image.device) < self.p
        )


class Identity(BatchOp):
    """ToTensorV2, NoOp: okc's images are tensors already."""

    def forward(self, image: torch.Tensor, masks: Masks) -> tuple[torch.Tensor, Masks]:
        return image, masks


class Normalize(BatchOp):
    """``(x * 255 / max_pixel_value - mean) / std`` on images in [0, 1] (albumentations)."""

    def __init__(
        self,
        mean: Sequence[float] | float,
        std: Sequence[float] | float,
        max_pixel_value: float = 255.0,
    ) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
        if (std_t == 0).any():
            raise ValueError("Normalize: std must not be 0")
        self.register_buffer("scale", 255.0 / (max_pixel_value * std_t))
        self.register_buffer("shift", -mean_t / std_t)

    def forward(self, image: torch.Tensor, masks: Masks) -> tuple[torch.Tensor, Masks]:
        return torch.addcmul(self.shift, image, self.scale), masks


# --- size ops: per sample on the CPU in `transform`, batched elsewhere --------------------------


class SizeOp(BatchOp):
    """A deterministic op that changes the image size; masks get nearest-neighbour resampling."""

    per_sample = True

    def __init__(self, p: float = 1.0) -> None:
        super().__init__()
        if p != 1.0:
            raise ValueError(f"{type(self).__name__} changes the image size and must have p=1")

    def forward(self, image: torch.Tensor, masks: Masks) -> tuple[torch.Tensor, Masks]:
        height, width = image.shape[-2:]
        return self.image(image, height, width), [self.mask(m, height, width) for m in masks]

    def image(self, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
        raise NotImplementedError

    def mask(self, mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.image(mask, height, width)


class _Resizing(SizeOp):
    def __init__(self, interpolation: int | str, antialias: bool, p: float) -> None:
        super().__init__(p)
        self.mode = to_interpolation(interpolation)
        self.antialias = antialias and self.mode != InterpolationMode.NEAREST

    def target(self, height: int, width: int) -> tuple[int, int]:
        raise NotImplementedError

    def image(self, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
        size = list(self.target(height, width))
        if size == [height, width]:
            return image
        return TF.resize(image, size, interpolation=self.mode, antialias=self.antialias)

    def mask(self, mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
        size = list(self.target(height, width))
        if size == [height, width]:
            return mask
        # Nearest on a float copy: label values survive, and int64 has no resize kernel.
        resized = TF.resize(mask.float(), size, interpolation=InterpolationMode.NEAREST)
        return resized.to(mask.dtype)


class Resize(_Resizing):
    """To ``(height, width)``; an int ``size`` sets the ``side`` (short/long) keeping aspect."""

    def __init__(
        self,
        size: int | Sequence[int],
        *,
        side: str = "short",
        interpolation: int | str = 1,
        antialias: bool = True,
        p: float = 1.0,
    ) -> None:
        super().__init__(interpolation, antialias, p)
        if side not in ("short", "long"):
            raise ValueError(f"side must be short or long, not '{side}'")
        self.size, self.side = size, side

    def target(self, height: int, width: int) -> tuple[int, int]:
        if not isinstance(self.size, int):
            return int(self.size[0]), int(self.size[1])
        short, long_ = min(height, width), max(height, width)
        scale = self.size / (short if self.side == "short" else long_)
        return max(1, round(height * scale)), max(1, round(width * scale))


class FitResize(_Resizing):
    """Scale to fit inside ``max_height`` x ``max_width`` keeping the aspect ratio (TorchOk)."""

    def __init__(
        self,
        max_height: int = 1024,
        max_width: int = 1024,
        *,
        interpolation: int | str = 1,
        antialias: bool = True,
        p: float = 1.0,
    ) -> None:
        super().__init__(interpolation, antialias, p)
        self.max_height, self.max_width = max_height, max_width

    def target(self, height: int, width: int) -> tuple[int, int]:
        scale = min(self.max_height / height, self.max_width / width)
        return max(1, round(height * scale)), max(1, round(width * scale))


class CenterCrop(SizeOp):
    """The central ``(height, width)``; zero-padded where the image is smaller."""

    def __init__(self, size: Sequence[int], p: float = 1.0) -> None:
        super().__init__(p)
        self.size = [int(size[0]), int(size[1])]

    def image(self, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return TF.center_crop(image, self.size)


class Crop(SizeOp):
    """The box ``x_min:x_max, y_min:y_max`` (albumentations Crop)."""

    def __init__(self, x_min: int, y_min: int, x_max: int, y_max: int, p: float = 1.0) -> None:
        super().__init__(p)
        if x_max <= x_min or y_max <= y_min:
            raise ValueError("Crop needs x_min < x_max and y_min < y_max")
        self.box = (y_min, x_min, y_max - y_min, x_max - x_min)

    def image(self, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return TF.crop(image, *self.box)


class PadIfNeeded(SizeOp):
    """Pad to at least ``min_height`` x ``min_width`` with a constant (``value``/``mask_value``)."""

    def __init__(
        self,
        min_height: int,
        min_width: int,
        *,
        position: str = "center",
        value: float = 0,
        mask_value: float = 0,
        p: float = 1.0,
    ) -> None:
        super().__init__(p)
        if position not in ("center", "top_left"):
            raise ValueError(f"position must be center or top_left, not '{position}'")
        self.min_height, self.min_width, self.position = min_height, min_width, position
        self.value, self.mask_value = value, mask_value

    def _padding(self, height: int, width: int) -> list[int]:
        dh, dw = max(0, self.min_height - height), max(0, self.min_width - width)
        if self.position == "top_left":
            return [0, 0, dw, dh]
        return [dw // 2, dh // 2, dw - dw // 2, dh - dh // 2]

    def image(self, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
        fill = self.value if image.dtype == torch.uint8 else self.value / 255
        return TF.pad(image, self._padding(height, width), fill=fill)

    def mask(self, mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return TF.pad(mask, self._padding(height, width), fill=self.mask_value)


# --- photometric ops Kornia has no close match for ----------------------------------------------


class _Random(BatchOp):
    """A photometric op applied per sample with probability ``p``; masks untouched."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, image: torch.Tensor, masks: Masks) -> tuple[torch.Tensor, Masks]:
        apply = torch.rand(image.shape[0], 1, 1, 1, device=image.device) < self.p
        return torch.where(apply, self.change(image), image), masks

    def change(self, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _uniform(low: float, high: float, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.rand(shape, device=like.device, dtype=like.dtype) * (high - low) + low


class GaussNoise(_Random):
    """Gaussian noise with a per-sample variance drawn from ``var_limit`` (0-255 units)."""

    def __init__(
        self, var_limit: Sequence[float] | float, mean: float, per_channel: bool, p: float
    ) -> None:
        super().__init__(p)
        low, high = (var_limit, var_limit) if isinstance(var_limit, (int, float)) else var_limit
        self.var_limit, self.mean, self.per_channel = (float(low), float(high)), mean, per_channel

    def change(self, image: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = image.shape
        std = _uniform(*self.var_limit, (batch, 1, 1, 1), image).sqrt_() / 255
        noise = torch.randn(
            batch, channels if self.per_channel else 1, height, width, device=image.device
        )
        return (image + noise * std + self.mean / 255).clamp_(0, 1)


class MultiplicativeNoise(_Random):
    """Multiply by a factor from ``multiplier``: per sample, channel or pixel."""

    def __init__(
        self, multiplier: Sequence[float], per_channel: bool, elementwise: bool, p: float
    ) -> None:
        super().__init__(p)
        self.low, self.high = float(multiplier[0]), float(multiplier[1])
        self.per_channel, self.elementwise = per_channel, elementwise

    def change(self, image: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = image.shape
        shape = (
            batch,
            channels if self.per_channel else 1,
            height if self.elementwise else 1,
            width if self.elementwise else 1,
        )
        return (image * _uniform(self.low, self.high, shape, image)).clamp_(0, 1)


class CoarseDropout(BatchOp):
    """Fill random rectangles (per sample, between min and max holes and sizes).

    Sizes below 1 are fractions of the image side. ``mask_fill_value`` also cuts the masks.
    """

    def __init__(
        self,
        max_holes: int,
        max_height: float,
        max_width: float,
        min_holes: int | None,
        min_height: float | None,
        min_width: float | None,
        fill_value: float,
        mask_fill_value: float | None,
        p: float,
    ) -> None:
        super().__init__()
        self.holes = (min_holes or max_holes, max_holes)
        self.heights = (min_height or max_height, max_height)
        self.widths = (min_width or max_width, max_width)
        self.fill_value, self.mask_fill_value, self.p = fill_value, mask_fill_value, p

    def forward(self, image: torch.Tensor, masks: Masks) -> tuple[torch.Tensor, Masks]:
        batch, _, height, width = image.shape
        device = image.device
        k = self.holes[1]
        count = torch.randint(self.holes[0], k + 1, (batch, 1), device=device)
        active = (torch.arange(k, device=device) < count) & (
            torch.rand(batch, 1, device=device) < self.p
        )
        hole_h = _pixels(self.heights, height, (batch, k), device)
        hole_w = _pixels(self.widths, width, (batch, k), device)
        top = (torch.rand(batch, k, device=device) * (height - hole_h + 1)).floor()
        left = (torch.rand(batch, k, device=device) * (width - hole_w + 1)).floor()
        ys = torch.arange(height, device=device).view(1, 1, -1)
        xs = torch.arange(width, device=device).view(1, 1, -1)
        in_rows = (ys >= top[..., None]) & (ys < (top + hole_h)[..., None])  # (B,k,H)
        in_cols = (xs >= left[..., None]) & (xs < (left + hole_w)[..., None])  # (B,k,W)
        cut = (in_rows[..., :, None] & in_cols[..., None, :] & active[..., None, None]).any(1)
        cut = cut[:, None]
        image = image.masked_fill(cut, self.fill_value / 255)
        if self.mask_fill_value is not None:
            masks = [m.masked_fill(cut, self.mask_fill_value) for m in masks]
        return image, masks


def _pixels(
    limits: tuple[float, float], side: int, shape: tuple[int, int], device: Any
) -> torch.Tensor:
    """Hole sizes in pixels, uniform over the limits (fractions of ``side`` when below 1)."""
    low, high = (int(v * side) if v < 1 else int(v) for v in limits)
    return torch.randint(low, max(low, high) + 1, shape, device=device).clamp_(1, side)
