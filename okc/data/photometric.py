"""albumentations' photometric ops that Kornia has no exact match for, as batched ops.

Each draws its parameters per sample, as albumentations (1.3.0) does, and works on okc's float
images in [0, 1] (albumentations' uint8 pixel values divided by 255); the clamps stand for
OpenCV's uint8 saturation. Histogram ops quantize to the 256 uint8 levels first, as they are
defined on them. Masks and boxes are left alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia.augmentation as K
import kornia.color
import kornia.filters
import torch
import torch.nn.functional as F

from okc.data import rng
from okc.data.borders import BORDER_REPLICATE, pad
from okc.data.ops import Boxes, Masks, Out, Photometric
from okc.data.warps import uniform
from okc.errors import OkcError

Range = tuple[float, float]


def _levels(image: torch.Tensor) -> torch.Tensor:
    """The uint8 pixel values an okc image stands for (int64)."""
    return (image.clamp(0, 1) * 255).round().long()


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


class FancyPCA(Photometric):
    """Krizhevsky's PCA colour augmentation: each image shifted along the principal components of
    its own RGB covariance, ``alpha_s * sum_i lambda_i v_i`` with ``alpha_s ~ N(0, alpha)`` drawn
    once per sample (albumentations' choice). albumentations 1.3.0 pairs the eigenvalues with the
    rows of the eigenvector matrix (its ``np.column_stack`` transposes it); okc pairs each with
    its own eigenvector, as the paper does."""

    def __init__(self, alpha: float, p: float) -> None:
        super().__init__(p)
        self.alpha = float(alpha)

    def change(self, image: torch.Tensor) -> torch.Tensor:
        return (image + self.shift(image)[..., None, None]).clamp(0, 1)

    def shift(self, image: torch.Tensor) -> torch.Tensor:
        """Each image's colour shift (B, 3), drawing its alpha. The covariance sums in float32
        (on [0, 1] pixels: 1e-6 relative, far below a uint8 level), which costs a third of
        float64's memory traffic; the 3x3 eigendecomposition runs in float64."""
        if image.shape[1] != 3:
            raise OkcError(f"FancyPCA needs RGB images, got {image.shape[1]} channels")
        pixels = image.flatten(2).float()  # (B, 3, N)
        centred = pixels - pixels.mean(2, keepdim=True)
        covariance = (centred @ centred.transpose(1, 2)).double() / max(1, pixels.shape[2] - 1)
        values, vectors = torch.linalg.eigh(covariance)
        alpha = rng.randn(image.shape[0], 1, device=image.device, dtype=torch.float64)
        shift = (vectors @ (values * alpha * self.alpha)[..., None])[..., 0]  # (B, 3)
        return shift.to(image.dtype)


class BrightnessContrast(Photometric):
    """``image * alpha + beta`` with ``alpha = 1 + U(contrast)``, ``beta = U(brightness)`` of the
    full range (``by_max``) or ``alpha * beta`` times the image's mean."""

    def __init__(self, brightness: Range, contrast: Range, by_max: bool, p: float) -> None:
        super().__init__(p)
        self.brightness, self.contrast, self.by_max = brightness, contrast, by_max

    def change(self, image: torch.Tensor) -> torch.Tensor:
        batch = image.shape[0]
        alpha = _per_sample(1 + uniform(*self.contrast, (batch,), image.device))
        beta = _per_sample(uniform(*self.brightness, (batch,), image.device))
        if not self.by_max:
            beta = alpha * beta * image.mean((1, 2, 3), keepdim=True)
        return (image * alpha + beta).clamp(0, 1)


class HueSaturationValue(Photometric):
    """OpenCV-HSV shifts: hue by U(hue) in OpenCV's 0-180 units (wrapping), saturation and value
    by U(sat), U(val) in 0-255 units (saturating). One-channel images get the value shift only."""

    def __init__(self, hue: Range, saturation: Range, value: Range, p: float) -> None:
        super().__init__(p)
        self.hue, self.saturation, self.value = hue, saturation, value

    def change(self, image: torch.Tensor) -> torch.Tensor:
        batch, device = image.shape[0], image.device
        value = _per_sample(uniform(*self.value, (batch,), device)) / 255
        if image.shape[1] == 1:
            return (image + value).clamp(0, 1)
        hsv = kornia.color.rgb_to_hsv(image)
        hue = _per_sample(uniform(*self.hue, (batch,), device)) * (2 * math.pi / 180)
        saturation = _per_sample(uniform(*self.saturation, (batch,), device)) / 255
        hsv = torch.cat(
            [
                (hsv[:, :1] + hue).remainder(2 * math.pi),
                (hsv[:, 1:2] + saturation).clamp(0, 1),
                (hsv[:, 2:] + value).clamp(0, 1),
            ],
            dim=1,
        )
        return kornia.color.hsv_to_rgb(hsv).clamp(0, 1)


class Sharpen(Photometric):
    """Blend of the image and a 3x3 sharpening of it: kernel ``(1 - a) * identity + a * [[-1,
    -1, -1], [-1, 8 + l, -1], [-1, -1, -1]]``, ``a ~ U(alpha)``, ``l ~ U(lightness)``."""

    def __init__(self, alpha: Range, lightness: Range, p: float) -> None:
        super().__init__(p)
        self.alpha, self.lightness = alpha, lightness

    def change(self, image: torch.Tensor) -> torch.Tensor:
        batch, device = image.shape[0], image.device
        alpha = uniform(*self.alpha, (batch, 1, 1), device)
        lightness = uniform(*self.lightness, (batch, 1, 1), device)
        identity = torch.zeros(3, 3, device=device)
        identity[1, 1] = 1
        effect = -torch.ones(batch, 3, 3, device=device)
        effect[:, 1, 1] = 8 + lightness[:, 0, 0]
        kernel = (1 - alpha) * identity + alpha * effect
        return kornia.filters.filter2d(image, kernel, border_type="reflect").clamp(0, 1)


class Equalize(Photometric):
    """Histogram equalization on the uint8 levels, OpenCV's (``cv``) or Pillow's (``pil``) LUT, per
    channel or, with ``by_channels=False``, on the luma (YCrCb's Y) only."""

    def __init__(self, mode: str, by_channels: bool, p: float) -> None:
        super().__init__(p)
        if mode not in ("cv", "pil"):
            raise ValueError(f"Equalize mode must be 'cv' or 'pil', not {mode!r}")
        self.mode, self.by_channels = mode, by_channels

    def change(self, image: torch.Tensor) -> torch.Tensor:
        if self.by_channels or image.shape[1] == 1:
            return self._equalize(_levels(image)).to(image.dtype) / 255
        weights = torch.tensor([0.299, 0.587, 0.114], device=image.device).view(1, 3, 1, 1)
        luma = _levels((image * weights).sum(1, keepdim=True))
        shift = self._equalize(luma) - luma  # Cr and Cb unchanged: RGB moves with Y
        return (image + shift.to(image.dtype) / 255).clamp(0, 1)

    def _equalize(self, levels: torch.Tensor) -> torch.Tensor:
        batch, channels = levels.shape[:2]
        flat = levels.view(batch * channels, -1)
        hist = torch.zeros(flat.shape[0], 256, device=flat.device).scatter_add_(
            1, flat, torch.ones_like(flat, dtype=torch.float32)
        )
        lut = self._cv_lut(hist) if self.mode == "cv" else self._pil_lut(hist)
        return lut.gather(1, flat).view_as(levels)

    @staticmethod
    def _cv_lut(hist: torch.Tensor) -> torch.Tensor:
        """cv2.equalizeHist: ``round((cdf - cdf(first level)) * 255 / (N - count(first)))``."""
        total = hist.sum(1, keepdim=True)
        first = hist.gather(1, (hist > 0).float().argmax(1, keepdim=True))
        cdf = hist.cumsum(1)
        scale = 255 / (total - first).clamp(min=1)
        lut = torch.round((cdf - first) * scale).clamp(0, 255).long()
        level = torch.arange(256, device=hist.device).expand_as(lut)
        constant = (first == total).expand_as(lut)  # one level only: cv2 keeps it
        return torch.where(constant, level, lut)

    @staticmethod
    def _pil_lut(hist: torch.Tensor) -> torch.Tensor:
        """Pillow's ImageOps.equalize: ``(step // 2 + cdf before the level) // step``."""
        last = 255 - (hist > 0).flip(1).float().argmax(1, keepdim=True)
        step = ((hist.sum(1, keepdim=True) - hist.gather(1, last)) // 255).clamp(min=0)
        before = hist.cumsum(1) - hist
        lut = ((step // 2 + before) // step.clamp(min=1)).clamp(max=255).long()
        level = torch.arange(256, device=hist.device).expand_as(lut)
        return torch.where(step > 0, lut, level)


class Posterize(Photometric):
    """Keep the ``bits`` high bits of each uint8 level; bits drawn per sample from ``ranges``
    (one range for all channels, or one per channel)."""

    def __init__(self, ranges: Sequence[tuple[int, int]], p: float) -> None:
        super().__init__(p)
        if any(not 0 <= low <= high <= 8 for low, high in ranges):
            raise ValueError(f"num_bits must lie in [0, 8], got {list(ranges)}")
        self.ranges = [(int(low), int(high)) for low, high in ranges]

    def change(self, image: torch.Tensor) -> torch.Tensor:
        batch, channels = image.shape[:2]
        if len(self.ranges) not in (1, channels):
            raise OkcError(f"Posterize: {len(self.ranges)} bit ranges for {channels} channels")
        bits = torch.stack(
            [
                rng.randint(low, high + 1, (batch,), device=image.device)
                for low, high in self.ranges
            ],
            dim=1,
        ).view(batch, -1, 1, 1)
        keep = 255 - (2 ** (8 - bits) - 1)
        return (_levels(image) & keep).to(image.dtype) / 255


class Clahe(Photometric):
    """albumentations' CLAHE: contrast-limited adaptive equalization of the lightness (L of CIE
    LAB) of an RGB image, or of a grey image itself, as cv2 does it there; Kornia's CLAHE (which
    on its own would equalize R, G and B apart, shifting colours) equalizes the channel."""

    def __init__(self, clip_limit: Range, grid: tuple[int, int], p: float) -> None:
        super().__init__(p)
        self.clahe = K.RandomClahe(clip_limit=clip_limit, grid_size=grid, p=1.0)

    def change(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[1] == 1:
            return self.clahe(image)
        lab = kornia.color.rgb_to_lab(image.clamp(0, 1))
        light = self.clahe(lab[:, :1] / 100) * 100
        return kornia.color.lab_to_rgb(torch.cat([light, lab[:, 1:]], 1)).clamp(0, 1)


class ChannelDropout(Photometric):
    """Fill ``k ~ randint(low, high)`` randomly chosen channels of each sample."""

    def __init__(self, drop_range: tuple[int, int], fill_value: float, p: float) -> None:
        super().__init__(p)
        low, high = drop_range
        if not 1 <= low <= high:
            raise ValueError(f"invalid channel_drop_range {list(drop_range)}: need 1 <= min <= max")
        self.low, self.high, self.fill = int(low), int(high), fill_value / 255

    def change(self, image: torch.Tensor) -> torch.Tensor:
        batch, channels = image.shape[:2]
        if channels == 1 or self.high >= channels:
            raise OkcError(
                f"ChannelDropout drops up to {self.high} of {channels} channels: it may not drop "
                "them all"
            )
        count = rng.randint(self.low, self.high + 1, (batch, 1), device=image.device)
        rank = rng.rand(batch, channels, device=image.device).argsort(1).argsort(1)
        drop = (rank < count)[..., None, None]
        return image.masked_fill(drop, self.fill)


class ToFloat(Photometric):
    """albumentations' ToFloat: ``pixel / max_value``, on okc's images ``image * 255 / max``."""

    def __init__(self, max_value: float) -> None:
        super().__init__(1.0)
        self.factor = 255.0 / max_value

    def change(self, image: torch.Tensor) -> torch.Tensor:
        return image * self.factor


# --- blurs with a kernel size drawn per sample -------------------------------------------------

# cv2.getGaussianKernel's fixed kernels for small sizes when sigma <= 0.
_SMALL_GAUSSIANS = {
    1: [1.0],
    3: [0.25, 0.5, 0.25],
    5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
    7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
}


def _gaussian_1d(size: int, sigma: torch.Tensor) -> torch.Tensor:
    """cv2.getGaussianKernel(size, sigma) for each sigma (N,) -> (N, size): Kornia's kernel, with
    cv2's sigma for sigma <= 0 and its fixed small kernels."""
    default = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    sig = torch.where(sigma > 0, sigma, torch.full_like(sigma, default))[:, None]
    kernel = kornia.filters.get_gaussian_kernel1d(size, sig)
    if size in _SMALL_GAUSSIANS:
        table = torch.tensor(_SMALL_GAUSSIANS[size], device=sigma.device).expand_as(kernel)
        kernel = torch.where((sigma > 0)[:, None], kernel, table)
    return kernel


class KernelBlur(Photometric):
    """A linear blur with one kernel per sample: subclasses give the (B, k, k) kernels, which are
    centred in one (B, K, K) stack and applied with cv2's default border (reflect-101)."""

    def kernels(self, batch: int, device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def change(self, image: torch.Tensor) -> torch.Tensor:
        kernel = self.kernels(image.shape[0], image.device)
        return kornia.filters.filter2d(image, kernel, border_type="reflect").clamp(0, 1)


def _centred(size: torch.Tensor, biggest: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: which of ``biggest`` positions a kernel of ``size`` covers, centred as cv2
    anchors it (at ``size // 2``), and the offset of its first position."""
    start = biggest // 2 - size // 2
    index = torch.arange(biggest, device=size.device)
    return (index >= start[:, None]) & (index < (start + size)[:, None]), start


def _odd_choice(low: int, high: int, batch: int, device: torch.device) -> torch.Tensor:
    """albumentations' ``random.choice(np.arange(low, high + 1, 2))`` per sample."""
    options = torch.arange(low, high + 1, 2, device=device)
    return options[rng.randint(0, len(options), (batch,), device=device)]


class Blur(KernelBlur):
    """A box blur with a ``k x k`` kernel, ``k`` drawn from ``low, low + 2, ..., high``."""

    def __init__(self, limit: tuple[int, int], p: float) -> None:
        super().__init__(p)
        self.low, self.high = limit
        if not 1 <= self.low <= self.high:
            raise ValueError(f"blur_limit must give 1 <= low <= high, got {list(limit)}")

    def kernels(self, batch: int, device: torch.device) -> torch.Tensor:
        size = _odd_choice(self.low, self.high, batch, device)
        biggest = self.high | 1
        covered, _ = _centred(size, biggest)
        box = (covered[:, :, None] & covered[:, None, :]).float()
        return box / (size.float() ** 2)[:, None, None]


class GaussianBlur(KernelBlur):
    """cv2.GaussianBlur with ``ksize`` from ``blur_limit`` (albumentations' odd rounding; 0 means
    "from sigma") and ``sigma ~ U(sigma_limit)`` (0 means "from ksize")."""

    def __init__(self, limit: tuple[int, int], sigma: Range, p: float) -> None:
        super().__init__(p)
        self.low, self.high = limit
        self.sigma = sigma
        for k in (self.low, self.high):
            if k != 0 and k % 2 != 1:
                raise ValueError(f"GaussianBlur supports only odd blur limits, got {list(limit)}")

    def kernels(self, batch: int, device: torch.device) -> torch.Tensor:
        size = rng.randint(self.low, self.high + 1, (batch,), device=device)
        size = torch.where((size != 0) & (size % 2 == 0), (size + 1) % (self.high + 1), size)
        sigma = uniform(*self.sigma, (batch,), device)
        from_sigma = (torch.round(sigma * 3 * 2 + 1).long() | 1).clamp(min=1)  # uint8 images
        size = torch.where(size == 0, from_sigma, size)
        biggest = max(self.high, round(max(self.sigma) * 6 + 1) | 1, 1)
        kernel = torch.zeros(batch, biggest, device=device)
        for k in range(1, biggest + 1, 2):  # one row per distinct size (a handful at most)
            kernel = torch.where((size == k)[:, None], self._row(k, sigma, biggest), kernel)
        return kernel[:, :, None] * kernel[:, None, :]

    @staticmethod
    def _row(size: int, sigma: torch.Tensor, biggest: int) -> torch.Tensor:
        side = (biggest - size) // 2
        return F.pad(_gaussian_1d(size, sigma), (side, side))


class MotionBlur(KernelBlur):
    """A line kernel between two random points of a ``k x k`` grid (centred through the middle
    unless ``allow_shifted``), ``k`` drawn like Blur's, rasterized as cv2.line draws it: one
    pixel per step along the longer axis, ties on the other axis broken as cv2 breaks them."""

    def __init__(self, limit: tuple[int, int], allow_shifted: bool, p: float) -> None:
        super().__init__(p)
        self.low, self.high = limit
        self.allow_shifted = allow_shifted
        if (not allow_shifted and self.low % 2 != 1) or self.high % 2 != 1 or self.low < 3:
            raise ValueError(f"MotionBlur needs odd kernel sizes of at least 3, got {list(limit)}")

    def kernels(self, batch: int, device: torch.device) -> torch.Tensor:
        size = _odd_choice(self.low, self.high, batch, device)

        def point() -> torch.Tensor:
            return (rng.rand(batch, device=device) * size).floor()

        x1, x2, y1 = point(), point(), point()
        distinct = (y1 + 1 + (rng.rand(batch, device=device) * (size - 1)).floor()) % size
        y2 = torch.where(x1 == x2, distinct, point())
        if not self.allow_shifted:
            x1, x2 = self._centre(*self._odd_length(x1, x2), size)
            y1, y2 = self._centre(*self._odd_length(y1, y2), size)
        biggest = self.high
        _, start = _centred(size, biggest)
        length = torch.maximum((x2 - x1).abs(), (y2 - y1).abs()).clamp(min=1)[:, None]
        step = torch.minimum(torch.arange(biggest, device=device)[None], length)
        fx = x1[:, None] + (x2 - x1)[:, None] * step / length  # exact halves stay exact
        fy = y1[:, None] + (y2 - y1)[:, None] * step / length
        # cv2.line: x ties round down, y ties toward the left end's row.
        falling = ((x1 <= x2) == (y1 <= y2))[:, None]
        ys = torch.where(falling, torch.ceil(fy - 0.5), torch.floor(fy + 0.5))
        xs = torch.ceil(fx - 0.5).long() + start[:, None]
        ys = ys.long() + start[:, None]
        kernel = torch.zeros(batch, biggest * biggest, device=device)
        kernel.scatter_(1, ys * biggest + xs, 1.0)
        kernel = kernel.view(batch, biggest, biggest)
        return kernel / kernel.sum((1, 2), keepdim=True)

    @staticmethod
    def _odd_length(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        even = (a - b).abs() % 2 == 1  # |a - b| + 1 even
        return torch.where(even & (b <= a), a - 1, a), torch.where(even & (b > a), b - 1, b)

    @staticmethod
    def _centre(
        a: torch.Tensor, b: torch.Tensor, size: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shift = (a + b) / 2 - (size / 2 - 0.5)
        return torch.trunc(a - shift), torch.trunc(b - shift)


class MedianBlur(Photometric):
    """cv2.medianBlur (replicated border) with an odd ``k`` drawn per sample; one pass per
    distinct size (a host sync each: the sizes decide the unfolding)."""

    def __init__(self, limit: tuple[int, int], p: float) -> None:
        super().__init__(p)
        self.low, self.high = limit
        if self.low % 2 != 1 or self.high % 2 != 1:
            raise ValueError(f"MedianBlur supports only odd blur limits, got {list(limit)}")

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        batch = image.shape[0]
        size = _odd_choice(self.low, self.high, batch, image.device)
        size = torch.where(rng.rand(batch, device=image.device) < self.p, size, 1)
        out = image
        for k in range(3, self.high + 1, 2):
            index = (size == k).nonzero().flatten()  # sync point
            if len(index):
                out = out.index_copy(0, index, _median(image.index_select(0, index), k))
        return out, masks, boxes


def _median(image: torch.Tensor, size: int) -> torch.Tensor:
    half = size // 2
    padded = pad(image, half, half, half, half, border=BORDER_REPLICATE)
    patches = padded.unfold(2, size, 1).unfold(3, size, 1)  # (B, C, H, W, k, k)
    return patches.flatten(-2).median(-1).values
