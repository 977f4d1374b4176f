"""albumentations' random warps as batched ops: each chosen sample resampled through its own map.

albumentations (1.3.0, the version TorchOk pinned) warps one image at a time with
``cv2.warpAffine``/``warpPerspective``/``remap``; here every op draws its parameters per sample
(with its probability ``p``), builds one sampling grid per image and resamples the whole batch
with ``okc.data.borders.remap``, which follows cv2's interpolation and border modes exactly
(``border_mode`` codes, ``value`` fills in 0-255 units, ``mask_value`` for label maps).

Label maps are resampled nearest with the same border mode and ``mask_value``, so labels are never
blended. Boxes move with the image: ops with a transform matrix (the affine family, perspective)
carry each box's corners (or, with ``rotate_method="ellipse"``, the ellipse inscribed in it)
through the matrix and take the enclosing box; the free-form warps (elastic, grid, optical) do
what albumentations does, resample the box's own mask through the image's map and take the box
around what is left of it.

Where okc deliberately differs from albumentations 1.3.0 (bugs, not behaviour):

- ``ElasticTransform``: albumentations builds the random affine's anchor points from
  ``(height // 2, width // 2)`` read as (x, y), swapping the centre on non-square images; okc
  anchors them at the image centre. The affine warp and the displacement are one resampling here
  (albumentations resamples twice), so border pixels may differ.
- ``GridDistortion``: each strip's map leaves out its end point (see the class).
- ``OpticalDistortion``: cv2's default new camera matrix puts the undistorted centre at
  ``(width - 1) / 2`` while albumentations' camera centre is ``width / 2``, a half-pixel shift of
  every output pixel; okc centres both at the image centre (``shift_limit`` still shifts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from kornia.geometry.conversions import convert_affinematrix_to_homography
from kornia.geometry.linalg import transform_points
from kornia.geometry.transform import get_perspective_transform, get_rotation_matrix2d

from okc.data import borders, rng
from okc.data.ops import BatchOp, Boxes, Masks, Out, kornia_resample
from okc.errors import OkcError

Range = tuple[float, float]


def uniform(low: float, high: float, shape: Sequence[int], device: torch.device) -> torch.Tensor:
    return rng.rand(*shape, device=device) * (high - low) + low


class Warp(BatchOp):
    """A random warp applied to each sample with probability ``p`` (see the module docstring).

    Subclasses implement ``sample(batch, height, width, device)``, returning the (B, H, W, 2)
    source coordinates of every output pixel and, when the warp is a projective transform, its
    (B, 3, 3) forward matrix (source to output pixel centres), which moves boxes exactly.
    """

    def __init__(
        self,
        *,
        interpolation: int | str,
        border_mode: int | str,
        value: borders.Fill,
        mask_value: borders.Fill,
        p: float,
    ) -> None:
        super().__init__()
        self.resample = kornia_resample(interpolation)
        self.border = borders.border_mode(border_mode)
        self.value, self.mask_value, self.p = value, mask_value, p

    def sample(
        self, batch: int, height: int, width: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        batch, _, height, width = image.shape
        chosen = rng.rand(batch, device=image.device) < self.p
        grid, matrix = self.sample(batch, height, width, image.device)
        nearest = self.nearest_grid(grid, matrix, height, width)
        fill = borders.fill_tensor(self.value, image, scale=255.0)
        image_grid = nearest if self.resample == "nearest" else grid
        out = borders.remap(image, image_grid, resample=self.resample, border=self.border,
                            fill=fill)  # fmt: skip
        if self.resample == "bicubic":  # cv2 saturates uint8 images; bicubic can overshoot
            out = out.clamp(0, 1)
        masks_out = [self._mask(m, nearest) for m in masks]
        if out.shape[-2:] == image.shape[-2:]:  # size ops have p=1: every sample changes
            keep = chosen.view(-1, 1, 1, 1)
            out = torch.where(keep, out, image)
            masks_out = [torch.where(keep, o, m) for o, m in zip(masks_out, masks, strict=True)]
        if boxes is not None:
            boxes = self._boxes(boxes, chosen, grid, matrix, *out.shape[-2:])
        return out, masks_out, boxes

    def nearest_grid(
        self, grid: torch.Tensor, matrix: torch.Tensor | None, height: int, width: int
    ) -> torch.Tensor:
        """The grid nearest-neighbour sampling reads (label maps, ``interpolation: 0``): the
        same as the grid, which cv2's warps round to the nearest pixel too."""
        return grid

    def _mask(self, mask: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        fill = borders.fill_tensor(self.mask_value, mask, scale=1.0)
        return borders.remap(mask, grid, resample="nearest", border=self.border, fill=fill)

    def _boxes(
        self,
        boxes: Boxes,
        chosen: torch.Tensor,
        grid: torch.Tensor,
        matrix: torch.Tensor | None,
        height: int,
        width: int,
    ) -> Boxes:
        moved = []
        for i, (box, take) in enumerate(zip(boxes.boxes, chosen.tolist(), strict=True)):  # sync
            if not take or not len(box):
                moved.append(box)
            elif matrix is not None:
                moved.append(self.transform_boxes(box, matrix[i]))
            else:
                moved.append(self._boxes_by_mask(box, grid[i], height, width))
        return boxes.moved(moved, height, width)

    def transform_boxes(self, boxes: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """The boxes enclosing each box's corners carried through ``matrix``."""
        x1, y1, x2, y2 = boxes.unbind(1)
        corners = torch.stack([x1, y1, x2, y1, x2, y2, x1, y2], dim=1).view(-1, 4, 2)
        return enclosing(project(corners, matrix))

    def _boxes_by_mask(
        self, boxes: torch.Tensor, grid: torch.Tensor, height: int, width: int
    ) -> torch.Tensor:
        """albumentations' way for free-form warps: warp each box's mask, box what is left."""
        ys = torch.arange(height, device=boxes.device).view(1, -1, 1) + 0.5
        xs = torch.arange(width, device=boxes.device).view(1, 1, -1) + 0.5
        inside = (
            (xs >= boxes[:, 0, None, None]) & (xs < boxes[:, 2, None, None])
            & (ys >= boxes[:, 1, None, None]) & (ys < boxes[:, 3, None, None])
        )  # fmt: skip
        warped = borders.remap(
            inside[:, None].float(), grid.expand(len(boxes), -1, -1, -1).contiguous(),
            resample="nearest", border=self.border,
        )[:, 0] > 0.5  # fmt: skip
        rows, cols = warped.any(2), warped.any(1)
        empty = ~rows.any(1)
        x1 = torch.where(cols, xs[0], math.inf).amin(1) - 0.5
        x2 = torch.where(cols, xs[0], -math.inf).amax(1) + 0.5
        y1 = torch.where(rows, ys[0, :, 0], math.inf).amin(1) - 0.5
        y2 = torch.where(rows, ys[0, :, 0], -math.inf).amax(1) + 0.5
        out = torch.stack([x1, y1, x2, y2], dim=1)
        return torch.where(empty[:, None], torch.zeros_like(out), out)


def project(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Points (N, P, 2) in pixel-edge coordinates through a 3x3 matrix on pixel centres."""
    return transform_points(matrix[None], points - 0.5) + 0.5


def enclosing(points: torch.Tensor) -> torch.Tensor:
    """(N, P, 2) points to the (N, 4) xyxy boxes around them."""
    return torch.cat([points.amin(1), points.amax(1)], dim=1)


def grid_from_matrix(matrix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The sampling grid of a forward (B, 3, 3) transform onto a ``height`` x ``width`` output:
    output pixel q reads M^-1 q."""
    base = borders.pixel_grid(1, height, width, matrix.device)[0].reshape(-1, 2).to(matrix.dtype)
    homogeneous = torch.cat([base, torch.ones_like(base[:, :1])], dim=1)  # (HW, 3)
    source = homogeneous @ torch.linalg.inv(matrix).transpose(1, 2)  # (B, HW, 3)
    source = source[..., :2] / source[..., 2:]
    return source.view(-1, height, width, 2)


def rotation_matrix(
    centre: tuple[float, float], angle: torch.Tensor, scale: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """``cv2.getRotationMatrix2D`` per sample (Kornia's): (B, 3, 3), angles in degrees
    (counter-clockwise)."""
    angle, batch = angle.double(), angle.shape[0]
    centres = angle.new_tensor(centre).expand(batch, 2)
    scales = torch.as_tensor(scale, dtype=angle.dtype, device=angle.device)
    scales = scales.reshape(-1, 1).expand(batch, 2)
    return convert_affinematrix_to_homography(get_rotation_matrix2d(centres, angle, scales))


class MatrixWarp(Warp):
    """A warp given by one projective matrix per sample; ``rotate_method`` says how boxes turn."""

    rotate_method = "largest_box"

    def matrix(self, batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def sample(
        self, batch: int, height: int, width: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        matrix = self.matrix(batch, height, width, device).to(torch.float64)
        return grid_from_matrix(matrix, height, width).float(), matrix.float()

    def transform_boxes(self, boxes: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        if self.rotate_method != "ellipse":
            return super().transform_boxes(boxes, matrix)
        # albumentations' "ellipse": the ellipse inscribed in the box, 360 points of it.
        angles = torch.deg2rad(torch.arange(360, device=boxes.device, dtype=boxes.dtype))
        half = (boxes[:, 2:] - boxes[:, :2]) / 2
        centre = boxes[:, :2] + half
        ring = torch.stack([torch.sin(angles), torch.cos(angles)], dim=1)  # (360, 2)
        return enclosing(project(centre[:, None] + half[:, None] * ring, matrix))


def _rotate_method(method: str) -> str:
    if method not in ("largest_box", "ellipse"):
        raise ValueError(f"rotate_method must be largest_box or ellipse, not {method!r}")
    return method


class ShiftScaleRotate(MatrixWarp):
    """cv2.getRotationMatrix2D about the image centre with a random angle and scale, then a shift
    of ``dx * width``, ``dy * height`` (ranges already albumentations' (low, high) tuples)."""

    def __init__(
        self, *, shift_x: Range, shift_y: Range, scale: Range, rotate: Range, rotate_method: str,
        **warp: object,
    ) -> None:  # fmt: skip
        super().__init__(**warp)  # type: ignore[arg-type]
        self.shift_x, self.shift_y, self.scale, self.rotate = shift_x, shift_y, scale, rotate
        self.rotate_method = _rotate_method(rotate_method)

    def matrix(self, batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        angle = uniform(*self.rotate, (batch,), device)
        scale = uniform(*self.scale, (batch,), device)
        m = rotation_matrix((width / 2 - 0.5, height / 2 - 0.5), angle, scale)
        m[:, 0, 2] += uniform(*self.shift_x, (batch,), device) * width
        m[:, 1, 2] += uniform(*self.shift_y, (batch,), device) * height
        return m


class SafeRotate(MatrixWarp):
    """Rotate, then scale the rotated frame back into the image so no corner is lost."""

    def __init__(self, *, rotate: Range, **warp: object) -> None:
        super().__init__(**warp)  # type: ignore[arg-type]
        self.rotate = rotate

    def matrix(self, batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        angle = uniform(*self.rotate, (batch,), device).double()
        m = rotation_matrix((width / 2, height / 2), angle)
        cos, sin = m[:, 0, 0].abs(), m[:, 0, 1].abs()
        new_w = torch.ceil(height * sin + width * cos)
        new_h = torch.ceil(height * cos + width * sin)
        m[:, 0, 2] += new_w / 2 - width / 2
        m[:, 1, 2] += new_h / 2 - height / 2
        scale = torch.diag_embed(
            torch.stack([width / new_w, height / new_h, torch.ones_like(new_w)], 1)
        )
        return scale @ m


class Affine(MatrixWarp):
    """albumentations' Affine: scale, translation, rotation and x/y shear about the centre, drawn
    per sample (each axis independently), composed as albumentations composes skimage's."""

    def __init__(
        self,
        *,
        scale: dict[str, Range],
        translate_percent: dict[str, Range] | None,
        translate_px: dict[str, Range] | None,
        rotate: Range,
        shear: dict[str, Range],
        keep_ratio: bool,
        **warp: object,
    ) -> None:
        super().__init__(**warp)  # type: ignore[arg-type]
        self.scale, self.rotate, self.shear, self.keep_ratio = scale, rotate, shear, keep_ratio
        self.translate_percent, self.translate_px = translate_percent, translate_px

    def _translation(self, batch: int, height: int, width: int, device: torch.device) -> tuple:
        if self.translate_px is not None:
            return tuple(
                rng.randint(int(lo), int(hi) + 1, (batch,), device=device).double()
                for lo, hi in (self.translate_px["x"], self.translate_px["y"])
            )
        if self.translate_percent is not None:
            x = uniform(*self.translate_percent["x"], (batch,), device).double() * width
            y = uniform(*self.translate_percent["y"], (batch,), device).double() * height
            return x, y
        zero = torch.zeros(batch, dtype=torch.float64, device=device)
        return zero, zero

    def matrix(self, batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        def draw(limits: Range) -> torch.Tensor:
            return uniform(*limits, (batch,), device).double()

        tx, ty = self._translation(batch, height, width, device)
        shear_x, shear_y = -draw(self.shear["x"]), -draw(self.shear["y"])
        sx, sy = draw(self.scale["x"]), draw(self.scale["y"])
        if self.keep_ratio:
            sy = sx
        rotate = torch.deg2rad(-draw(self.rotate))
        shift_x, shift_y = width / 2 - 0.5, height / 2 - 0.5
        to_topleft = _translate(-shift_x, -shift_y, batch, device)
        to_centre = _translate(shift_x, shift_y, batch, device)
        turn = _skimage_affine(torch.tensor(-math.pi / 2, dtype=torch.float64), batch, device)
        back = _skimage_affine(torch.tensor(math.pi / 2, dtype=torch.float64), batch, device)
        shear_y_only = _skimage_affine(
            torch.zeros(batch, dtype=torch.float64, device=device), batch, device,
            shear=torch.deg2rad(shear_y),
        )  # fmt: skip
        main = _skimage_affine(
            rotate, batch, device, scale=(sx, sy), shear=torch.deg2rad(shear_x), shift=(tx, ty)
        )
        # skimage's "a + b" applies a then b: the product runs right to left.
        return to_centre @ main @ back @ shear_y_only @ turn @ to_topleft


def _translate(x: float, y: float, batch: int, device: torch.device) -> torch.Tensor:
    m = torch.eye(3, dtype=torch.float64, device=device).repeat(batch, 1, 1)
    m[:, 0, 2], m[:, 1, 2] = x, y
    return m


def _skimage_affine(
    rotation: torch.Tensor,
    batch: int,
    device: torch.device,
    *,
    scale: tuple[torch.Tensor, torch.Tensor] | None = None,
    shear: torch.Tensor | None = None,
    shift: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``skimage.transform.AffineTransform(scale, rotation, shear, translation).params``."""
    rotation = rotation.to(device).expand(batch)
    one = torch.ones(batch, dtype=torch.float64, device=device)
    sx, sy = scale if scale is not None else (one, one)
    shear = shear if shear is not None else torch.zeros_like(one)
    tx, ty = shift if shift is not None else (0 * one, 0 * one)
    rows = [
        sx * torch.cos(rotation), -sy * torch.sin(rotation + shear), tx,
        sx * torch.sin(rotation), sy * torch.cos(rotation + shear), ty,
        0 * one, 0 * one, one,
    ]  # fmt: skip
    return torch.stack(rows, dim=1).view(-1, 3, 3)


class Perspective(MatrixWarp):
    """albumentations' Perspective with ``keep_size``: corners jittered by |N(0, s)| of the size
    (s drawn per sample from ``scale``), the quadrilateral mapped onto the whole image (through
    the bird's-eye rectangle albumentations warps to, then resized back, as one transform)."""

    def __init__(self, *, scale: Range, fit_output: bool, **warp: object) -> None:
        super().__init__(**warp)  # type: ignore[arg-type]
        self.scale, self.fit_output = scale, fit_output

    def matrix(self, batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        sigma = uniform(*self.scale, (batch, 1, 1), device)
        jitter = (rng.randn(batch, 4, 2, device=device) * sigma).abs().remainder(1.0)
        corner = torch.tensor([[0, 0], [1, 0], [1, 1], [0, 1]], device=device, dtype=torch.float32)
        points = (corner + jitter * (1 - 2 * corner)) * torch.tensor([width, height], device=device)
        points = _order_points(points.double())
        size_w, size_h = _birdseye_size(points)
        dst = torch.stack(
            [torch.zeros_like(size_w), torch.zeros_like(size_w), size_w, torch.zeros_like(size_w),
             size_w, size_h, torch.zeros_like(size_w), size_h], dim=1,
        ).view(-1, 4, 2)  # fmt: skip
        m = get_perspective_transform(points, dst)
        if self.fit_output:
            m, size_w, size_h = _expand(m, height, width)
        sx, sy = width / size_w, height / size_h  # cv2.resize back to the image size
        resize = torch.zeros_like(m)
        resize[:, 0, 0], resize[:, 0, 2] = sx, 0.5 * sx - 0.5
        resize[:, 1, 1], resize[:, 1, 2] = sy, 0.5 * sy - 0.5
        resize[:, 2, 2] = 1
        return resize @ m


def _order_points(points: torch.Tensor) -> torch.Tensor:
    """Top-left, top-right, bottom-right, bottom-left, as albumentations orders them."""
    by_x = points.gather(1, points[..., 0].argsort(1)[..., None].expand(-1, -1, 2))
    left, right = by_x[:, :2], by_x[:, 2:]

    def split(pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        upper_first = (pair[:, 0, 1] < pair[:, 1, 1])[:, None]
        return torch.where(upper_first, pair[:, 0], pair[:, 1]), torch.where(
            upper_first, pair[:, 1], pair[:, 0]
        )

    tl, bl = split(left)
    tr, br = split(right)
    return torch.stack([tl, tr, br, bl], dim=1)


def _birdseye_size(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rectangle albumentations warps the quadrilateral to (int of the longer sides; its
    widening of degenerate quadrilaterals, below 2 pixels, is not reproduced)."""
    tl, tr, br, bl = points.unbind(1)
    width = torch.maximum((tr - tl).norm(dim=1), (br - bl).norm(dim=1)).floor().clamp(min=2)
    height = torch.maximum((tr - br).norm(dim=1), (tl - bl).norm(dim=1)).floor().clamp(min=2)
    return width, height


def _expand(m: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, ...]:
    """albumentations' ``fit_output``: move and size the output to hold the whole image."""
    rect = torch.tensor(
        [[0, 0], [width, 0], [width, height], [0, height]], dtype=m.dtype, device=m.device
    ).expand(len(m), 4, 2)
    homogeneous = torch.cat([rect, torch.ones_like(rect[..., :1])], dim=-1) @ m.transpose(1, 2)
    dst = homogeneous[..., :2] / homogeneous[..., 2:]
    dst = torch.round(dst - dst.amin(1, keepdim=True))
    return (
        get_perspective_transform(rect.contiguous(), dst),
        dst[..., 0].amax(1),
        dst[..., 1].amax(1),
    )


class RandomSizedCrop(Warp):
    """albumentations' RandomSizedCrop: a crop ``h ~ randint(min_max_height)`` high and
    ``int(h * w2h_ratio)`` wide at a random place, resized to ``height`` x ``width`` (cv2.resize's
    half-pixel mapping; the crop's edge pixels repeat beyond it, as when resizing the crop alone).
    """

    def __init__(
        self, *, min_max_height: tuple[int, int], size: tuple[int, int], w2h_ratio: float,
        **warp: object,
    ) -> None:  # fmt: skip
        super().__init__(border_mode=borders.BORDER_REPLICATE, value=None, mask_value=None,
                         **warp)  # type: ignore[arg-type]  # fmt: skip
        self.min_max_height, self.size, self.w2h_ratio = min_max_height, size, w2h_ratio

    def crop_size(
        self, batch: int, height: int, width: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each sample's crop height and width (float64, whole pixels)."""
        low, high = self.min_max_height
        crop_h = rng.randint(low, high + 1, (batch,), device=device).double()
        if high > height or int(high * self.w2h_ratio) > width:
            raise OkcError(
                f"RandomSizedCrop: a crop of up to {high}x{int(high * self.w2h_ratio)} does not "
                f"fit in a {height}x{width} image"
            )
        return crop_h, torch.floor(crop_h * self.w2h_ratio)

    def sample(
        self, batch: int, height: int, width: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        crop_h, crop_w = self.crop_size(batch, height, width, device)
        # albumentations: int((H - h + 1) * U[0, 1)), every place from top to bottom.
        top = torch.floor((height - crop_h + 1) * rng.rand(batch, device=device).double())
        left = torch.floor((width - crop_w + 1) * rng.rand(batch, device=device).double())
        out_h, out_w = self.size
        sx, sy = out_w / crop_w, out_h / crop_h
        m = torch.zeros(batch, 3, 3, dtype=torch.float64, device=device)
        m[:, 0, 0], m[:, 0, 2] = sx, (0.5 - left) * sx - 0.5
        m[:, 1, 1], m[:, 1, 2] = sy, (0.5 - top) * sy - 0.5
        m[:, 2, 2] = 1
        grid = grid_from_matrix(m, out_h, out_w)
        low_xy = torch.stack([left, top], 1)[:, None, None]
        high_xy = torch.stack([left + crop_w - 1, top + crop_h - 1], 1)[:, None, None]
        return torch.maximum(torch.minimum(grid, high_xy), low_xy).float(), m.float()

    def nearest_grid(
        self, grid: torch.Tensor, matrix: torch.Tensor | None, height: int, width: int
    ) -> torch.Tensor:
        """cv2.resize's INTER_NEAREST on the crop: output pixel x reads crop pixel
        ``floor(x * crop / out)`` (not the pixel nearest its centre)."""
        assert matrix is not None
        m = matrix.double()
        out_h, out_w = self.size
        axes = []
        for axis, size in ((0, out_w), (1, out_h)):
            scale = m[:, axis, axis]  # out / crop
            first = 0.5 - (m[:, axis, 2] + 0.5) / scale  # the crop's first pixel
            last = first + torch.round(size / scale) - 1
            index = torch.arange(size, device=m.device, dtype=torch.float64)
            # crop / out is a ratio of small integers: 1e-4 absorbs float error, never a step.
            source = first[:, None] + torch.floor(index / scale[:, None] + 1e-4)
            axes.append(torch.minimum(source, last[:, None]))
        xs, ys = axes
        return torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), -1).float()


class RandomResizedCrop(RandomSizedCrop):
    """albumentations' RandomResizedCrop: a crop of ``U(scale)`` of the area and an aspect ratio
    log-uniform in ``ratio`` (up to 10 tries per sample to fit it in the image, else the central
    crop of the nearest ratio), at a random place, resized to ``size``."""

    TRIES = 10

    def __init__(self, *, scale: Range, ratio: Range, size: tuple[int, int], **warp: object):
        super().__init__(min_max_height=(1, 1), size=size, w2h_ratio=1.0, **warp)
        self.scale, self.ratio = scale, ratio

    def crop_size(
        self, batch: int, height: int, width: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        area = uniform(*self.scale, (batch, self.TRIES), device).double() * height * width
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(uniform(log_low, log_high, (batch, self.TRIES), device).double())
        crop_w = torch.round(torch.sqrt(area * aspect))
        crop_h = torch.round(torch.sqrt(area / aspect))
        fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
        first = torch.where(fits.any(1), fits.int().argmax(1), 0)[:, None]
        in_ratio = width / height
        if in_ratio < min(self.ratio):  # the fallback: central, clamped to the ratio range
            fallback = (round(width / min(self.ratio)), width)
        elif in_ratio > max(self.ratio):
            fallback = (height, round(height * max(self.ratio)))
        else:
            fallback = (height, width)
        found = fits.any(1)
        crop_h = torch.where(found, crop_h.gather(1, first)[:, 0], float(fallback[0]))
        crop_w = torch.where(found, crop_w.gather(1, first)[:, 0], float(fallback[1]))
        return crop_h, crop_w


class GridDistortion(Warp):
    """albumentations' grid distortion: the image cut into ``num_steps`` strips per axis, each
    stretched by ``1 + U(distort_limit)``; piecewise-linear maps, per sample. A strip of ``n``
    pixels reads ``[prev, cur)`` in ``n`` even steps; albumentations' ``np.linspace`` includes
    ``cur``, stretching every strip by ``n / (n - 1)`` even with no distortion (a bug okc does
    not copy: ``distort_limit=0`` is the identity here)."""

    def __init__(
        self, *, num_steps: int, distort_limit: Range, normalized: bool, **warp: object
    ) -> None:
        super().__init__(**warp)  # type: ignore[arg-type]
        if num_steps < 1:
            raise ValueError(f"num_steps must be at least 1, got {num_steps}")
        self.num_steps, self.distort_limit, self.normalized = num_steps, distort_limit, normalized

    def sample(
        self, batch: int, height: int, width: int, device: torch.device
    ) -> tuple[torch.Tensor, None]:
        xx = self._axis(batch, width, device)
        yy = self._axis(batch, height, device)
        grid = torch.stack(
            [xx[:, None, :].expand(-1, height, -1), yy[:, :, None].expand(-1, -1, width)], dim=-1
        )
        return grid, None

    def _axis(self, batch: int, size: int, device: torch.device) -> torch.Tensor:
        """Source coordinate of each output pixel along one axis (albumentations' linspaces)."""
        count = self.num_steps
        step = size // count
        position = torch.arange(size, device=device, dtype=torch.float32)
        if step == 0:  # narrower than num_steps: albumentations maps it all to 0; keep it
            return position.expand(batch, size)
        steps = 1 + uniform(*self.distort_limit, (batch, count + 1), device)
        if self.normalized:
            last = min(size, (count + 1) * step) - count * step
            steps[:, -1] *= last / step
            steps = steps * ((size / step) / steps.sum(1, keepdim=True))
        segment = (position // step).clamp(max=count).long()  # (W,)
        start = segment * step
        length = (start + step).clamp(max=size) - start
        prev = step * (steps.cumsum(1) - steps)  # (B, S+1): where each segment starts
        cur = prev + step * steps
        cur = torch.where(start + step > size, torch.tensor(float(size), device=device), cur[
            :, segment
        ])  # fmt: skip
        prev = prev[:, segment]
        return prev + (cur - prev) * (position - start) / length


class OpticalDistortion(Warp):
    """Barrel/pincushion distortion (cv2.initUndistortRectifyMap with k1 = k2 = k ~
    U(distort_limit), focal lengths the image size) and a centre shift of round(U(shift_limit))
    pixels, per sample."""

    def __init__(self, *, distort_limit: Range, shift_limit: Range, **warp: object) -> None:
        super().__init__(**warp)  # type: ignore[arg-type]
        self.distort_limit, self.shift_limit = distort_limit, shift_limit

    def sample(
        self, batch: int, height: int, width: int, device: torch.device
    ) -> tuple[torch.Tensor, None]:
        k = uniform(*self.distort_limit, (batch, 1, 1), device)
        dx = torch.round(uniform(*self.shift_limit, (batch, 1, 1), device))
        dy = torch.round(uniform(*self.shift_limit, (batch, 1, 1), device))
        grid = borders.pixel_grid(batch, height, width, device)
        cx, cy = (width - 1) / 2, (height - 1) / 2
        x, y = (grid[..., 0] - cx) / width, (grid[..., 1] - cy) / height
        r2 = x * x + y * y
        factor = 1 + k * r2 + k * r2 * r2
        return torch.stack([x * factor * width + cx + dx, y * factor * height + cy + dy], -1), None


class ElasticTransform(Warp):
    """albumentations 1.3.0's elastic transform: a random affine (three anchor points moved by
    U(-alpha_affine, alpha_affine) pixels) and a displacement field of uniform noise smoothed by
    a Gaussian of ``sigma`` and scaled by ``alpha`` (scipy's gaussian_filter; with
    ``approximate``, cv2's 17x17 GaussianBlur), resampled in one pass."""

    def __init__(
        self,
        *,
        alpha: float,
        sigma: float,
        alpha_affine: float,
        approximate: bool,
        same_dxdy: bool,
        **warp: object,
    ) -> None:
        super().__init__(**warp)  # type: ignore[arg-type]
        self.alpha, self.sigma, self.alpha_affine = float(alpha), float(sigma), float(alpha_affine)
        self.approximate, self.same_dxdy = approximate, same_dxdy

    def sample(
        self, batch: int, height: int, width: int, device: torch.device
    ) -> tuple[torch.Tensor, None]:
        fields = 1 if self.same_dxdy else 2
        noise = rng.rand(batch, fields, height, width, device=device) * 2 - 1
        displacement = self._smooth(noise) * self.alpha
        if self.same_dxdy:
            displacement = displacement.expand(-1, 2, -1, -1)
        target = borders.pixel_grid(batch, height, width, device) + displacement.permute(0, 2, 3, 1)
        inverse = torch.linalg.inv(self._affine(batch, height, width, device))
        homogeneous = torch.cat([target, torch.ones_like(target[..., :1])], dim=-1)
        source = homogeneous.view(batch, -1, 3) @ inverse.transpose(1, 2)
        return source[..., :2].view(batch, height, width, 2), None

    def _affine(self, batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """cv2.getAffineTransform from three anchors around the centre to their moved copies."""
        centre = torch.tensor([width // 2, height // 2], dtype=torch.float32, device=device)
        side = min(height, width) // 3
        offsets = torch.tensor([[side, side], [side, -side], [-side, -side]], device=device)
        anchors = (centre + offsets).expand(batch, 3, 2)
        moved = anchors + uniform(-self.alpha_affine, self.alpha_affine, (batch, 3, 2), device)
        ones = torch.ones(batch, 3, 1, device=device)
        # rows [x, y, 1] @ M^T = moved: solve for the 2x3 forward matrix.
        solved = torch.linalg.solve(torch.cat([anchors, ones], 2), moved)  # (B, 3, 2)
        bottom = torch.tensor([0.0, 0.0, 1.0], device=device).expand(batch, 1, 3)
        return torch.cat([solved.transpose(1, 2), bottom], dim=1)

    def _smooth(self, noise: torch.Tensor) -> torch.Tensor:
        if self.approximate:  # cv2.GaussianBlur((17, 17), sigma), BORDER_REFLECT_101
            sigma = self.sigma if self.sigma > 0 else 0.3 * ((17 - 1) * 0.5 - 1) + 0.8
            return gaussian_filter(noise, sigma, radius=8, border=borders.BORDER_REFLECT_101)
        if self.sigma <= 0:  # scipy: no smoothing
            return noise
        radius = int(4.0 * self.sigma + 0.5)  # scipy's truncate=4.0
        return gaussian_filter(noise, self.sigma, radius=radius, border=borders.BORDER_REFLECT)


def gaussian_filter(image: torch.Tensor, sigma: float, *, radius: int, border: int) -> torch.Tensor:
    """A separable Gaussian of ``sigma`` over (B, C, H, W) with a ``2 * radius + 1`` kernel.

    Wide kernels (albumentations' default sigma of 50 gives 401 taps) are applied through the
    FFT: the same linear convolution of the padded rows, in O(n log n) instead of O(n * taps).
    """
    x = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    rows = _convolve(borders.pad(image, radius, radius, 0, 0, border=border), kernel, dim=-2)
    return _convolve(borders.pad(rows, 0, 0, radius, radius, border=border), kernel, dim=-1)


def _convolve(image: torch.Tensor, kernel: torch.Tensor, *, dim: int) -> torch.Tensor:
    """The valid part of a 1-D convolution of ``image`` along ``dim`` (the kernel is symmetric)."""
    taps = kernel.numel()
    moved = image.movedim(dim, -1)
    if taps <= 25:
        out = moved.unfold(-1, taps, 1) @ kernel
    else:  # circular convolution of the full padded length is exact on the valid outputs
        length = moved.shape[-1]
        spectrum = torch.fft.rfft(moved, n=length) * torch.fft.rfft(kernel, n=length)
        out = torch.fft.irfft(spectrum, n=length)[..., taps - 1 :]
    return out.movedim(-1, dim)
