"""Shapes: a procedurally generated, learnable dataset for every task, with no download.

Each sample is drawn from its own seed (``seed``, ``split``, ``index``), so it is the same whichever
worker draws it, in whatever order, after a resume. An image is a noisy background (random base
colour, a linear gradient, Gaussian pixel noise) with ``num_shapes`` solid shapes of random kind,
size, position, rotation and colour (always far from the background colour). What makes a class is
the outline alone, so a model has to learn shape, not colour or position; rotation and scale make it
more than template matching, and the contrast margin keeps it learnable (a small CNN reaches >95%).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import attrs
import numpy as np
import torch

from okc.data.datasets.base import ImageDataset, ImageSource
from okc.data.io import convert_format
from okc.errors import ParamError
from okc.registry import DATASETS

Inside = Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]


def _triangle(u: np.ndarray, v: np.ndarray, r: np.ndarray, R: float) -> np.ndarray:
    angles = np.pi / 2 + 2 * np.pi / 3 * np.arange(3)
    return np.all(u[..., None] * np.cos(angles) + v[..., None] * np.sin(angles) <= R / 2, axis=-1)


def _square_ring(u: np.ndarray, v: np.ndarray, inner: float, outer: float) -> np.ndarray:
    d = np.maximum(np.abs(u), np.abs(v))
    return (d <= outer) & (d >= inner)


# Every shape is rotation-distinct from the others (no square vs diamond, no plus vs X).
SHAPES: dict[str, Inside] = {
    "circle": lambda u, v, r, R: r <= R,
    "square": lambda u, v, r, R: _square_ring(u, v, 0.0, 0.8 * R),
    "triangle": _triangle,
    "cross": lambda u, v, r, R: (
        ((np.abs(u) <= 0.3 * R) & (np.abs(v) <= R)) | ((np.abs(v) <= 0.3 * R) & (np.abs(u) <= R))
    ),
    "ring": lambda u, v, r, R: (r <= R) & (r >= 0.55 * R),
    "star": lambda u, v, r, R: r <= R * (0.55 + 0.45 * np.cos(5 * np.arctan2(v, u))),
    "half_disc": lambda u, v, r, R: (np.hypot(u, v + 0.3 * R) <= R) & (v >= -0.3 * R),
    "ellipse": lambda u, v, r, R: (u / R) ** 2 + (v / (0.5 * R)) ** 2 <= 1,
    "l_shape": lambda u, v, r, R: (
        ((u <= -0.35 * R) & (u >= -R) & (np.abs(v) <= R))
        | ((np.abs(u) <= R) & (v >= 0.35 * R) & (v <= R))
    ),
    "frame": lambda u, v, r, R: _square_ring(u, v, 0.45 * R, 0.8 * R),
}
_KINDS = tuple(SHAPES.values())
_SPLITS = {"train": 0, "valid": 1, "test": 2}


@attrs.frozen(kw_only=True)
class Drawing(ImageSource):
    """The params of every Shapes dataset.

    Args:
        num_samples: samples in the split.
        image_size: height and width.
        num_classes: how many shape kinds (the first of ``SHAPES``; at most 10).
        noise: standard deviation of the pixel noise, in 0-255 units.
        seed: the dataset's seed; splits draw from separate streams of it.
        split: train, valid or test.
        train: TorchOk-style alias for ``split`` (true: train, false: valid).
    """

    num_samples: int = 1000
    image_size: int = 32
    num_classes: int = 10
    noise: float = 12.0
    seed: int = 0
    split: Literal["train", "valid", "test"] = "train"
    train: bool | None = None

    def __attrs_post_init__(self) -> None:
        for key, least in (("num_samples", 0), ("image_size", 8)):
            if getattr(self, key) < least:
                raise ParamError(key, f"must be at least {least}, got {getattr(self, key)}")
        if not 1 <= self.num_classes <= len(SHAPES):
            raise ParamError("num_classes", f"must be 1..{len(SHAPES)}, got {self.num_classes}")


class DrawnShapes(ImageDataset):
    """What the Shapes datasets share: drawing sample ``index`` from its own seed."""

    num_shapes = 1

    def load(self, p: Drawing) -> None:
        self.num_samples, self.size, self.num_classes = p.num_samples, p.image_size, p.num_classes
        self.noise, self.seed = p.noise, p.seed
        self.split = p.split if p.train is None else ("train" if p.train else "valid")
        self.classes = list(SHAPES)[: p.num_classes]
        centers = np.arange(p.image_size) + 0.5
        self._y, self._x = np.meshgrid(centers, centers, indexing="ij")
        # Gradient coordinates in -0.5..0.5, precomputed: generation is per sample, keep it short.
        self._ry = (self._y / p.image_size - 0.5)[..., None]
        self._rx = (self._x / p.image_size - 0.5)[..., None]

    def __len__(self) -> int:
        return self.num_samples

    def render(self, index: int) -> tuple[torch.Tensor, list[int], torch.Tensor]:
        """The image (uint8 C,H,W), the class of each shape and the instance map (int64 H,W)."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng([self.seed, _SPLITS[self.split], index])
        size = self.size
        background = rng.uniform(0, 255, 3)
        slope = rng.uniform(-60, 60, (2, 3))
        ramp = self._rx * slope[0] + self._ry * slope[1]
        image = (background + ramp).astype(np.float32)
        instances = np.zeros((size, size), dtype=np.int64)
        single = self.num_shapes == 1
        kinds = []
        for number in range(1, self.num_shapes + 1):
            kind = int(rng.integers(self.num_classes))
            radius = size * (rng.uniform(0.28, 0.45) if single else rng.uniform(0.14, 0.25))
            cx, cy = rng.uniform(radius, size - radius, 2)
            angle = rng.uniform(0, 2 * np.pi)
            dx, dy = self._x - cx, self._y - cy
            u = dx * np.cos(angle) + dy * np.sin(angle)
            v = -dx * np.sin(angle) + dy * np.cos(angle)
            inside = _KINDS[kind](u, v, np.hypot(u, v), radius)
            image[inside] = _contrasting(rng, background)
            instances[inside] = number
            kinds.append(kind)
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(self.noise)
        pixels = torch.from_numpy(np.clip(image, 0, 255).astype(np.uint8))
        pixels = pixels.permute(2, 0, 1).contiguous()
        if self.image_format != "rgb":
            pixels = convert_format(pixels, self.image_format)
        return pixels, kinds, torch.from_numpy(instances)


@DATASETS.register
class Shapes(DrawnShapes):
    """Coloured geometric shapes on noisy backgrounds, generated per index from a seed.

    Sample keys: ``image``; ``target`` (int64 class of the shape, or a float multi-hot of the
    classes present when ``num_shapes > 1``); with ``with_mask`` a ``mask`` (int64 H,W:
    0 background, class + 1 on the shape); with ``with_instances`` ``instances`` (int64 H,W:
    0 background, shape number from 1; later shapes cover earlier ones); with ``with_boxes``
    ``bboxes`` (float32 N,4: the tight xyxy box, in pixel edges, of each shape's visible pixels;
    a shape covered entirely by later ones has none) and ``label`` (int64 N,: its class);
    ``index``.

    Args: ``Drawing``'s, and ``num_shapes``, shapes per image.
    """

    @attrs.frozen(kw_only=True)
    class Params(Drawing):
        num_shapes: int = 1
        with_mask: bool = False
        with_instances: bool = False
        with_boxes: bool = False

        def __attrs_post_init__(self) -> None:
            super().__attrs_post_init__()
            if self.num_shapes < 1:
                raise ParamError("num_shapes", f"must be at least 1, got {self.num_shapes}")

    def load(self, p: Params) -> None:
        super().load(p)
        self.num_shapes, self.with_mask = p.num_shapes, p.with_mask
        self.with_instances, self.with_boxes = p.with_instances, p.with_boxes
        if p.with_boxes:  # an instance attribute: only then do samples hold boxes
            self.ragged_keys = ("bboxes", "label")

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, kinds, instances = self.render(index)
        sample: dict[str, Any] = {"image": image, "index": index}
        if not self.test_mode:
            if self.num_shapes == 1:
                sample["target"] = torch.tensor(kinds[0])
            else:
                sample["target"] = torch.zeros(self.num_classes).index_fill_(
                    0, torch.tensor(kinds), 1.0
                )
            if self.with_mask:
                lookup = torch.tensor([0, *(k + 1 for k in kinds)])
                sample["mask"] = lookup[instances]
            if self.with_instances:
                sample["instances"] = instances
            if self.with_boxes:
                sample["bboxes"], sample["label"] = tight_boxes(instances, kinds)
        return sample


def tight_boxes(instances: torch.Tensor, kinds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per shape still visible in the instance map, its tight xyxy box and its class."""
    boxes, labels = [], []
    for number, kind in enumerate(kinds, start=1):
        ys, xs = (instances == number).nonzero(as_tuple=True)
        if len(xs):
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            labels.append(kind)
    return (
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.long),
    )


def _contrasting(
    rng: np.random.Generator, background: np.ndarray, margin: float = 110.0
) -> np.ndarray:
    """A colour at least ``margin`` away from ``background`` (RGB distance)."""
    for _ in range(16):
        color = rng.uniform(0, 255, 3)
        if np.linalg.norm(color - background) >= margin:
            return color
    return 255 - background  # every draw was close: the opposite colour is far enough
