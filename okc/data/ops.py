"""Batch operations okc adds around Kornia: containers, size-fixing ops, normalization, noise.

Every op maps ``(image, masks) -> (image, masks)``, or with boxes
``(image, masks, boxes) -> (image, masks, boxes)``. On the device ``image`` is float (B,C,H,W) in
[0, 1] (normalized after ``Normalize``) and ``masks`` a list of float (B,1,H,W) label maps that
geometric ops move with the image and photometric ops leave alone. Size ops (``per_sample = True``)
also run on one uint8 (C,H,W) sample with int64 (1,H,W) masks on the CPU, before batching: that
is what makes differently-sized images batchable. Other ops that must run before batching (a
random op ahead of a size op in ``augment``) run there through ``OneSample``.

``boxes`` is a ``Boxes``: per image an (N_i, 4) xyxy tensor in pixels with its labels. Geometric
ops move boxes exactly as they move the image (okc's size ops with torchvision's box kernels, the
same kernels as the image; Kornia's flips, crops, affine and perspective warps with Kornia's own
transform matrix; okc's warps in ``okc.data.warps``), photometric ops leave them alone, and an
op that cannot move boxes (Kornia's elastic or fisheye warps, a user op without box support)
raises an error when boxes are present rather than leaving them stale. After every geometric op
the boxes are clipped to the image, and a box is dropped with its label when nothing of it is
left, when its area is at most ``min_area`` pixels or when the fraction of its area still inside
the image is at most ``min_visibility``
(albumentations' rule, which TorchOk's datasets configured; both default to 0).

Random choices are made per sample, as albumentations does; containers apply a child to the
samples that drew it (``index_select``; one host sync to learn how many did).

What the pipeline asks of an augmentation op (the declared extension point): either a Kornia
``AugmentationBase2D``/``ImageSequential`` (run through ``KorniaOps``), or a ``BatchOp`` with

- ``apply(image, masks, boxes) -> (image, masks, boxes)``;
- ``p``: its per-sample probability, which containers read as its weight;
- ``per_sample``: True for deterministic, size-changing ops, which the pipeline runs on each
  sample before batching (``transform`` only);
- ``box_problem()``: why it cannot move boxes, or None.

Any other module is called as ``(image, masks) -> (image, masks)`` and refused on boxes.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import kornia.augmentation as K
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode

from okc.data import borders, rng
from okc.errors import OkcError

Masks = list[torch.Tensor]


class Boxes:
    """Boxes riding through augmentation with their batch (see the module docstring).

    ``boxes``: per image an (N_i, 4) float xyxy tensor in pixel-edge coordinates (a box over
    pixel column 0 alone spans x 0..1); ``labels``: per image (N_i,); ``visible``: per box the
    fraction of its area still inside the image (1 to start with).
    """

    def __init__(
        self,
        boxes: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor],
        *,
        visible: Sequence[torch.Tensor] | None = None,
        min_area: float = 0.0,
        min_visibility: float = 0.0,
    ) -> None:
        if len(boxes) != len(labels):
            raise OkcError(f"{len(boxes)} images of boxes but {len(labels)} of labels")
        self.boxes = [b.reshape(-1, 4).float() for b in boxes]
        self.labels = list(labels)
        for b, lab in zip(self.boxes, self.labels, strict=True):
            if lab.shape[0] != b.shape[0]:
                raise OkcError(f"{b.shape[0]} boxes but {lab.shape[0]} labels in one image")
        self.visible = (
            [b.new_ones(b.shape[0]) for b in self.boxes] if visible is None else list(visible)
        )
        self.min_area, self.min_visibility = float(min_area), float(min_visibility)

    def __len__(self) -> int:
        return len(self.boxes)

    def _like(self, boxes: list[torch.Tensor], labels: list[torch.Tensor],
              visible: list[torch.Tensor]) -> Boxes:  # fmt: skip
        return Boxes(boxes, labels, visible=visible, min_area=self.min_area,
                     min_visibility=self.min_visibility)  # fmt: skip

    def moved(self, boxes: Sequence[torch.Tensor], height: int, width: int) -> Boxes:
        """These boxes after a geometric op gave ``boxes`` on a ``height`` x ``width`` image:
        clipped, with the boxes (and labels) the module docstring's rule drops left out."""
        out_boxes, out_labels, out_visible = [], [], []
        for new, label, visible in zip(boxes, self.labels, self.visible, strict=True):
            new = new.reshape(-1, 4).float()
            full = _area(new)
            clipped = torch.stack(
                [new[:, 0].clamp(0, width), new[:, 1].clamp(0, height),
                 new[:, 2].clamp(0, width), new[:, 3].clamp(0, height)], dim=1,
            )  # fmt: skip
            area = _area(clipped)
            visible = visible * torch.where(full > 0, area / full.clamp(min=1e-12), 0.0)
            keep = (area > self.min_area) & (area > 0) & (visible > self.min_visibility)
            out_boxes.append(clipped[keep])
            out_labels.append(label[keep.to(label.device)])
            out_visible.append(visible[keep])
        return self._like(out_boxes, out_labels, out_visible)

    def select(self, index: torch.Tensor) -> Boxes:
        """The boxes of the images ``index`` lists."""
        keep = index.tolist()  # sync point: the subset was chosen on the device
        return self._like(
            [self.boxes[i] for i in keep], [self.labels[i] for i in keep],
            [self.visible[i] for i in keep],
        )  # fmt: skip

    def scatter(self, index: torch.Tensor, sub: Boxes) -> Boxes:
        """These boxes with the images ``index`` lists replaced by ``sub``'s."""
        boxes, labels, visible = list(self.boxes), list(self.labels), list(self.visible)
        for j, i in enumerate(index.tolist()):
            boxes[i], labels[i], visible[i] = sub.boxes[j], sub.labels[j], sub.visible[j]
        return self._like(boxes, labels, visible)


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


Out = tuple[torch.Tensor, Masks, "Boxes | None"]


def run(op: nn.Module, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
    """``op`` on a batch: okc's ops and Kornia's through okc's contract; any other module is
    called as ``(image, masks) -> (image, masks)`` and may not see boxes."""
    if isinstance(op, BatchOp):
        return op.apply(image, masks, boxes)
    if is_kornia(op):
        return KorniaOps([op]).apply(image, masks, boxes)
    if boxes is not None:
        raise OkcError(box_error(op))
    image, masks = op(image, masks)
    return image, masks, None


def box_error(op: nn.Module) -> str:
    return (
        f"{type(op).__name__} cannot move bounding boxes with the image (only okc's size ops, "
        "flips, crops and affine/perspective warps can); remove it from the augment/transform "
        "of a dataset with boxes"
    )


def box_problem(op: nn.Module) -> str | None:
    """Why ``op`` (or an op inside it) cannot run on a batch with boxes; None when it can."""
    if isinstance(op, BatchOp):
        return op.box_problem()
    if isinstance(op, K.IntensityAugmentationBase2D | K.GeometricAugmentationBase2D):
        return None
    if isinstance(op, K.ImageSequential):
        for child in op.children():
            if not isinstance(child, K.IntensityAugmentationBase2D):
                return box_error(child)
        return None
    return box_error(op)


# albumentations/cv2 interpolation codes and names, to torchvision's modes for tensors.
_INTERPOLATION = {
    0: InterpolationMode.NEAREST,
    1: InterpolationMode.BILINEAR,
    2: InterpolationMode.BICUBIC,
    3: InterpolationMode.BILINEAR,  # cv2 INTER_AREA: resizes antialias it; warps read it as linear
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
    """An op of okc's own; ``p`` is its per-sample probability (containers read it as a weight).

    Subclasses implement ``apply(image, masks, boxes)``, which always returns three values;
    ``forward`` returns ``(image, masks)`` when called without boxes.
    """

    per_sample = False  # True: deterministic and size-changing; runs per sample before batching
    p = 1.0

    def forward(
        self, image: torch.Tensor, masks: Masks, boxes: Boxes | None = None
    ) -> tuple[torch.Tensor, Masks] | tuple[torch.Tensor, Masks, Boxes]:
        image, masks, moved = self.apply(image, masks, boxes)
        if boxes is None:
            return image, masks
        assert moved is not None
        return image, masks, moved

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        raise NotImplementedError

    def box_problem(self) -> str | None:
        """Why this op cannot run with boxes (None: it moves them, or leaves them alone)."""
        return None


def is_kornia(op: nn.Module) -> bool:
    return isinstance(op, (K.AugmentationBase2D, K.ImageSequential))


class KorniaOps(BatchOp):
    """Consecutive Kornia ops in one ``AugmentationSequential``: masks follow geometric ops.

    With boxes each op runs in its own ``AugmentationSequential``, so that boxes are clipped
    after every op (a crop then a shift must not bring a cut-off box back into view). Kornia's
    transform matrices work on pixel centres at integer coordinates; boxes are in pixel-edge
    coordinates, hence the half-pixel shift around each call.
    """

    def __init__(self, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.seq = K.AugmentationSequential(*ops)
        self.singles = nn.ModuleList(K.AugmentationSequential(op) for op in ops)

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        if boxes is not None:
            return self._with_boxes(image, masks, boxes)
        if not masks:
            return self.seq(image), [], None
        out = self.seq(image, *masks, data_keys=["input"] + ["mask"] * len(masks))
        return out[0], list(out[1:]), None

    def box_problem(self) -> str | None:
        return next(filter(None, (box_problem(op) for op in self.seq.children())), None)

    def _with_boxes(self, image: torch.Tensor, masks: Masks, boxes: Boxes) -> Out:
        problem = self.box_problem()
        if problem:
            raise OkcError(problem)
        for seq in self.singles:
            if all(isinstance(op, K.IntensityAugmentationBase2D) for op in seq.children()):
                image = seq(image)
                continue
            keys = ["input"] + ["mask"] * len(masks) + ["bbox_xyxy"]
            out = seq(image, *masks, [b - 0.5 for b in boxes.boxes], data_keys=keys)
            image, masks = out[0], list(out[1:-1])
            moved = [b + 0.5 for b in out[-1]]
            boxes = boxes.moved(moved, image.shape[-2], image.shape[-1])
        return image, masks, boxes


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

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        for op in self.ops:
            image, masks, boxes = run(op, image, masks, boxes)
        return image, masks, boxes

    def box_problem(self) -> str | None:
        return next(filter(None, (box_problem(op) for op in self.ops)), None)


def _force(op: nn.Module) -> tuple[nn.Module, float]:
    """The op set to always apply, and the probability it had (a container's weight for it)."""
    if not isinstance(op, BatchOp | K.AugmentationBase2D):
        return op, 1.0  # an op with no probability of its own always applies
    p = float(op.p)
    op.p = 1.0
    return op, p


def runs_per_sample(op: nn.Module) -> bool:
    """Whether ``op`` is a size op the pipeline runs on each sample before batching."""
    return isinstance(op, BatchOp) and op.per_sample


def holds_size_op(op: nn.Module) -> bool:
    """Whether ``op`` is a size op or a container with one inside (OneOf/Compose of crops):
    the output size of either depends on the input's, so it runs before batching."""
    return any(runs_per_sample(m) for m in op.modules())


class OneSample(BatchOp):
    """Runs a batch op on one sample of the pipeline's per-sample stage (see ``pipeline``).

    Per-sample ops see a uint8 (C,H,W) image with int64 (1,H,W) label maps, size ops work on
    those directly; other ops get the float (1,C,H,W) batch of one they expect, and the result
    is quantized back to uint8, as albumentations quantizes after every op on uint8 images.
    """

    per_sample = True

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.op = op

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        if runs_per_sample(self.op):
            return run(self.op, image, masks, boxes)
        op = self._thread_copy()
        integer = image.dtype == torch.uint8
        batch = image[None].float() / 255 if integer else image[None]
        out, out_masks, boxes = run(op, batch, [m[None].float() for m in masks], boxes)
        out = (out[0] * 255).round_().clamp_(0, 255).to(torch.uint8) if integer else out[0]
        return out, [m[0].round().to(o.dtype) for m, o in zip(out_masks, masks, strict=True)], boxes

    def box_problem(self) -> str | None:
        return box_problem(self.op)

    def _thread_copy(self) -> nn.Module:
        """This loader thread's own copy of the op: Kornia's modules keep the parameters of
        their last call on themselves, so threads sharing one would mix their samples' draws."""
        copies = getattr(_THREAD, "copies", None)
        if copies is None:
            copies = _THREAD.copies = weakref.WeakKeyDictionary()
        if self not in copies:
            copies[self] = copy.deepcopy(self.op)
        return copies[self]


_THREAD = threading.local()


def apply_to(
    op: nn.Module, image: torch.Tensor, masks: Masks, boxes: Boxes | None, chosen: torch.Tensor
) -> Out:
    """Apply ``op`` to the samples where ``chosen`` (bool, B) is true."""
    index = chosen.nonzero().squeeze(1)  # sync point: the subset's size decides the shapes
    if index.numel() == 0:
        return image, masks, boxes
    if index.numel() == image.shape[0]:
        return run(op, image, masks, boxes)
    sub_image, sub_masks, sub_boxes = run(
        op,
        image.index_select(0, index),
        [m.index_select(0, index) for m in masks],
        None if boxes is None else boxes.select(index),
    )
    if sub_image.shape[1:] != image.shape[1:]:
        raise OkcError(
            f"{op} changes the image size but applies to only some samples (p < 1): "
            "set its p to 1, or move it out of OneOf/SomeOf"
        )
    image = image.index_copy(0, index, sub_image)
    masks = [m.index_copy(0, index, s) for m, s in zip(masks, sub_masks, strict=True)]
    if boxes is not None and sub_boxes is not None:
        boxes = boxes.scatter(index, sub_boxes)
    return image, masks, boxes


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

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        batch = image.shape[0]
        apply = rng.rand(batch, device=image.device) < self.p
        choice = rng.multinomial(self.weights.to(image.device), batch)
        for k, op in enumerate(self.children_):
            image, masks, boxes = apply_to(op, image, masks, boxes, apply & (choice == k))
        return image, masks, boxes

    def box_problem(self) -> str | None:
        return next(filter(None, (box_problem(op) for op in self.children_)), None)


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

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        batch, count = image.shape[0], len(self.children_)
        apply = rng.rand(batch, device=image.device) < self.p
        if self.replace:
            picks = rng.randint(0, count, (batch, self.n), device=image.device)
        else:
            picks = rng.rand(batch, count, device=image.device).argsort(1)[:, : self.n]
        chosen = F.one_hot(picks, count).amax(1).bool() & apply[:, None]
        for k, op in enumerate(self.children_):
            image, masks, boxes = apply_to(op, image, masks, boxes, chosen[:, k])
        return image, masks, boxes

    def box_problem(self) -> str | None:
        return next(filter(None, (box_problem(op) for op in self.children_)), None)


class Compose(BatchOp):
    """Children in order (each with its own p), the whole with probability ``p`` per sample."""

    def __init__(self, transforms: Sequence[nn.Module], p: float = 1.0) -> None:
        super().__init__()
        self.chain = Chain(transforms)
        self.p = p

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        if self.p >= 1.0:
            return self.chain.apply(image, masks, boxes)
        chosen = rng.rand(image.shape[0], device=image.device) < self.p
        return apply_to(self.chain, image, masks, boxes, chosen)

    def box_problem(self) -> str | None:
        return self.chain.box_problem()


class RandomFlip(BatchOp):
    """Per sample, with probability ``p``, one of ``choices`` (``(horizontal, vertical)`` flags)
    drawn uniformly. The per-sample stage runs Kornia's random flips as this op
    (``per_sample_form``), which draws from ``okc.data.rng``; on the device Kornia's stay."""

    def __init__(self, choices: Sequence[tuple[bool, bool]], p: float) -> None:
        super().__init__()
        self.register_buffer("choices", torch.tensor(choices, dtype=torch.bool), persistent=False)
        self.p = p

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        batch, device = image.shape[0], image.device
        chosen = rng.rand(batch, device=device) < self.p
        pick = self.choices.to(device)[rng.randint(0, len(self.choices), (batch,), device=device)]
        flips = pick & chosen[:, None]  # (B, 2): horizontal, vertical

        def flip(t: torch.Tensor) -> torch.Tensor:
            t = torch.where(flips[:, 0].view(-1, 1, 1, 1), t.flip(-1), t)
            return torch.where(flips[:, 1].view(-1, 1, 1, 1), t.flip(-2), t)

        if boxes is not None:
            height, width = image.shape[-2:]
            moved = []
            for box, (horizontal, vertical) in zip(boxes.boxes, flips.tolist(), strict=True):
                x1, y1, x2, y2 = box.unbind(1)  # sync point above: which samples flipped
                if horizontal:
                    x1, x2 = width - x2, width - x1
                if vertical:
                    y1, y2 = height - y2, height - y1
                moved.append(torch.stack([x1, y1, x2, y2], dim=1))
            boxes = boxes.moved(moved, height, width)
        return flip(image), [flip(m) for m in masks], boxes


def per_sample_form(op: nn.Module) -> nn.Module:
    """``op`` as the per-sample stage runs it: Kornia's random flips become ``RandomFlip`` (the
    same op drawing from the sample's own stream); Kornia at p=1 draws nothing, so flips inside
    okc's containers (Flip's OneOf) need no change."""
    if isinstance(op, K.RandomHorizontalFlip | K.RandomVerticalFlip) and float(op.p) < 1.0:
        horizontal = isinstance(op, K.RandomHorizontalFlip)
        return RandomFlip([(horizontal, not horizontal)], p=float(op.p))
    return op


class Identity(BatchOp):
    """ToTensorV2, NoOp: okc's images are tensors already."""

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        return image, masks, boxes


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

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        return torch.addcmul(self.shift, image, self.scale), masks, boxes


# --- size ops: per sample on the CPU in `transform`, batched elsewhere --------------------------


class SizeOp(BatchOp):
    """A deterministic op that changes the image size; masks get nearest-neighbour resampling,
    boxes the torchvision box kernel of the image's kernel."""

    per_sample = True

    def __init__(self, p: float = 1.0) -> None:
        super().__init__()
        if p != 1.0:
            raise ValueError(f"{type(self).__name__} changes the image size and must have p=1")

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        height, width = image.shape[-2:]
        out = self.image(image, height, width)
        masks = [self.mask(m, height, width) for m in masks]
        if boxes is not None:
            moved = [
                self.box(_canvas(b, height, width)).as_subclass(torch.Tensor) for b in boxes.boxes
            ]
            boxes = boxes.moved(moved, out.shape[-2], out.shape[-1])
        return out, masks, boxes

    def image(self, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
        raise NotImplementedError

    def mask(self, mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.image(mask, height, width)

    def box(self, boxes: tv_tensors.BoundingBoxes) -> tv_tensors.BoundingBoxes:
        """The boxes moved as ``image`` moves the pixels (unclipped; ``Boxes.moved`` clips)."""
        raise NotImplementedError


def _canvas(boxes: torch.Tensor, height: int, width: int) -> tv_tensors.BoundingBoxes:
    """Boxes for torchvision's box kernels, which must not clamp: clipping is ``Boxes.moved``'s
    job, and it needs the unclipped boxes for the visible fraction."""
    return tv_tensors.BoundingBoxes(
        boxes, format="XYXY", canvas_size=(height, width), clamping_mode=None
    )


class _Resizing(SizeOp):
    def __init__(self, interpolation: int | str, antialias: bool, p: float) -> None:
        super().__init__(p)
        self.mode = to_interpolation(interpolation)
        area = interpolation in (3, "area")  # cv2's INTER_AREA averages: always antialiased
        self.antialias = (antialias or area) and self.mode != InterpolationMode.NEAREST

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

    def box(self, boxes: tv_tensors.BoundingBoxes) -> tv_tensors.BoundingBoxes:
        return TF.resize(boxes, list(self.target(*boxes.canvas_size)))


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

    def box(self, boxes: tv_tensors.BoundingBoxes) -> tv_tensors.BoundingBoxes:
        return TF.center_crop(boxes, self.size)


class Crop(SizeOp):
    """The box ``x_min:x_max, y_min:y_max`` (albumentations Crop)."""

    def __init__(self, x_min: int, y_min: int, x_max: int, y_max: int, p: float = 1.0) -> None:
        super().__init__(p)
        if x_max <= x_min or y_max <= y_min:
            raise ValueError("Crop needs x_min < x_max and y_min < y_max")
        self.region = (y_min, x_min, y_max - y_min, x_max - x_min)

    def image(self, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return TF.crop(image, *self.region)

    def box(self, boxes: tv_tensors.BoundingBoxes) -> tv_tensors.BoundingBoxes:
        return TF.crop(boxes, *self.region)


class PadIfNeeded(SizeOp):
    """Pad to at least ``min_height`` x ``min_width`` (or up to a multiple of the divisors) with
    cv2's ``border`` mode; ``value``/``mask_value`` fill a constant border (0-255 units / labels).
    """

    POSITIONS = ("center", "top_left", "top_right", "bottom_left", "bottom_right")

    def __init__(
        self,
        min_height: int | None,
        min_width: int | None,
        *,
        pad_height_divisor: int | None = None,
        pad_width_divisor: int | None = None,
        position: str = "center",
        border: int = borders.BORDER_REFLECT_101,
        value: borders.Fill = None,
        mask_value: borders.Fill = None,
        p: float = 1.0,
    ) -> None:
        super().__init__(p)
        if (min_height is None) == (pad_height_divisor is None):
            raise ValueError("set exactly one of min_height and pad_height_divisor")
        if (min_width is None) == (pad_width_divisor is None):
            raise ValueError("set exactly one of min_width and pad_width_divisor")
        if position not in self.POSITIONS:
            raise ValueError(
                f"position must be one of {', '.join(self.POSITIONS)}, not {position!r}"
                + (
                    " (random places each sample differently: not supported)"
                    * (position == "random")
                )
            )
        self.min_height, self.min_width, self.position = min_height, min_width, position
        self.divisors = (pad_height_divisor, pad_width_divisor)
        self.border, self.value, self.mask_value = border, value, mask_value

    def _padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) as albumentations splits them."""
        dh = _grow(height, self.min_height, self.divisors[0])
        dw = _grow(width, self.min_width, self.divisors[1])
        top, left = dh // 2, dw // 2
        if self.position in ("top_left", "top_right"):
            top = 0
        if self.position in ("bottom_left", "bottom_right"):
            top = dh
        if self.position in ("top_left", "bottom_left"):
            left = 0
        if self.position in ("top_right", "bottom_right"):
            left = dw
        return top, dh - top, left, dw - left

    def image(self, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
        scale = 1.0 if image.dtype == torch.uint8 else 255.0
        fill = borders.fill_tensor(self.value, image, scale=scale)
        return borders.pad(image, *self._padding(height, width), border=self.border, fill=fill)

    def mask(self, mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
        fill = borders.fill_tensor(self.mask_value, mask, scale=1.0)
        return borders.pad(mask, *self._padding(height, width), border=self.border, fill=fill)

    def box(self, boxes: tv_tensors.BoundingBoxes) -> tv_tensors.BoundingBoxes:
        top, bottom, left, right = self._padding(*boxes.canvas_size)
        return TF.pad(boxes, [left, top, right, bottom])


def _grow(size: int, least: int | None, divisor: int | None) -> int:
    """How much albumentations pads one side: up to ``least``, or to a multiple of ``divisor``."""
    if least is not None:
        return max(0, least - size)
    assert divisor is not None
    return (divisor - size % divisor) % divisor


# --- photometric ops Kornia has no close match for ----------------------------------------------


class Photometric(BatchOp):
    """A photometric op applied per sample with probability ``p``; masks untouched."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        apply = rng.rand(image.shape[0], 1, 1, 1, device=image.device) < self.p
        return torch.where(apply, self.change(image), image), masks, boxes

    def change(self, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _uniform(low: float, high: float, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    return rng.rand(shape, device=like.device, dtype=like.dtype) * (high - low) + low


class GaussNoise(Photometric):
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
        noise = rng.randn(
            batch, channels if self.per_channel else 1, height, width, device=image.device
        )
        return (image + noise * std + self.mean / 255).clamp_(0, 1)


class MultiplicativeNoise(Photometric):
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
    Boxes keep their extent: a hole hides part of an object, it does not move it.
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

    def apply(self, image: torch.Tensor, masks: Masks, boxes: Boxes | None) -> Out:
        batch, _, height, width = image.shape
        device = image.device
        k = self.holes[1]
        count = rng.randint(self.holes[0], k + 1, (batch, 1), device=device)
        active = (torch.arange(k, device=device) < count) & (
            rng.rand(batch, 1, device=device) < self.p
        )
        hole_h = _pixels(self.heights, height, (batch, k), device)
        hole_w = _pixels(self.widths, width, (batch, k), device)
        top = (rng.rand(batch, k, device=device) * (height - hole_h + 1)).floor()
        left = (rng.rand(batch, k, device=device) * (width - hole_w + 1)).floor()
        ys = torch.arange(height, device=device).view(1, 1, -1)
        xs = torch.arange(width, device=device).view(1, 1, -1)
        in_rows = (ys >= top[..., None]) & (ys < (top + hole_h)[..., None])  # (B,k,H)
        in_cols = (xs >= left[..., None]) & (xs < (left + hole_w)[..., None])  # (B,k,W)
        cut = (in_rows[..., :, None] & in_cols[..., None, :] & active[..., None, None]).any(1)
        cut = cut[:, None]
        image = image.masked_fill(cut, self.fill_value / 255)
        if self.mask_fill_value is not None:
            masks = [m.masked_fill(cut, self.mask_fill_value) for m in masks]
        return image, masks, boxes


def _pixels(
    limits: tuple[float, float], side: int, shape: tuple[int, int], device: Any
) -> torch.Tensor:
    """Hole sizes in pixels, uniform over the limits (fractions of ``side`` when below 1)."""
    low, high = (int(v * side) if v < 1 else int(v) for v in limits)
    return rng.randint(low, max(low, high) + 1, shape, device=device).clamp_(1, side)
