"""Boxes through augmentation: hand-computed geometry for okc's size ops and flips, boxes that
follow the pixels under Kornia's random warps, clipping and dropping, and ops that refuse boxes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from okc.config.schema import Augmentation
from okc.data.augment import build_ops
from okc.data.ops import Boxes, Chain, run
from okc.errors import OkcError


def chain(*entries: tuple[str, dict[str, Any]]) -> nn.Module:
    return Chain(build_ops([Augmentation(n, p) for n, p in entries]))


def one(boxes: list[list[float]], labels: list[int] | None = None, **kw: float) -> Boxes:
    labels = labels if labels is not None else list(range(len(boxes)))
    return Boxes([torch.tensor(boxes).reshape(-1, 4)], [torch.tensor(labels)], **kw)


def apply(op: nn.Module, image: torch.Tensor, boxes: Boxes) -> tuple[torch.Tensor, Boxes]:
    out_image, _, out_boxes = run(op, image, [], boxes)
    assert out_boxes is not None
    return out_image, out_boxes


BOX = [[2.0, 3.0, 10.0, 8.0]]  # on a 20 (H) x 30 (W) image


@pytest.mark.parametrize(
    ("name", "params", "size", "expected"),
    [
        ("HorizontalFlip", {"p": 1.0}, (20, 30), [20.0, 3.0, 28.0, 8.0]),  # x -> 30 - x
        ("VerticalFlip", {"p": 1.0}, (20, 30), [2.0, 12.0, 10.0, 17.0]),  # y -> 20 - y
        ("Resize", {"height": 40, "width": 15}, (40, 15), [1.0, 6.0, 5.0, 16.0]),  # x/2, y*2
        ("FitResize", {"max_height": 10, "max_width": 100}, (10, 15), [1.0, 1.5, 5.0, 4.0]),
        ("PadIfNeeded", {"min_height": 30, "min_width": 40}, (30, 40), [7.0, 8.0, 15.0, 13.0]),
        ("PadIfNeeded", {"min_height": 30, "min_width": 40, "position": "top_left"}, (30, 40),
         BOX[0]),
        ("Crop", {"x_min": 1, "y_min": 2, "x_max": 21, "y_max": 12}, (10, 20), [1.0, 1.0, 9, 6]),
        ("CenterCrop", {"height": 10, "width": 20}, (10, 20), [-3.0, -2.0, 5.0, 3.0]),
        ("RandomCrop", {"height": 20, "width": 30}, (20, 30), BOX[0]),  # the whole image
    ],
)  # fmt: skip
def test_boxes_match_hand_computation(
    name: str, params: dict[str, Any], size: tuple[int, int], expected: list[float]
) -> None:
    image = torch.rand(1, 3, 20, 30)
    out, boxes = apply(chain((name, params)), image, one(BOX))
    assert tuple(out.shape[-2:]) == size
    clipped = torch.tensor(expected)
    clipped[0::2] = clipped[0::2].clamp(0, size[1])
    clipped[1::2] = clipped[1::2].clamp(0, size[0])
    torch.testing.assert_close(boxes.boxes[0], clipped[None])


def test_size_ops_on_one_unbatched_sample() -> None:
    """The per-sample path: a uint8 (C,H,W) image on the CPU, as the pipeline's transform."""
    image = torch.randint(0, 255, (3, 20, 30), dtype=torch.uint8)
    op = chain(("FitResize", {"max_height": 40, "max_width": 40}),
               ("PadIfNeeded", {"min_height": 40, "min_width": 40}))  # fmt: skip
    out, boxes = apply(op, image, one(BOX))
    assert out.shape == (3, 40, 40)  # 20x30 -> 27x40 -> padded 6 rows above, 7 below
    scale = torch.tensor([40 / 30, 27 / 20] * 2)  # each axis by the size it really got
    expected = torch.tensor(BOX) * scale + torch.tensor([0.0, 6.0, 0.0, 6.0])
    torch.testing.assert_close(boxes.boxes[0], expected)


def test_crop_clips_and_drops_boxes_with_their_labels() -> None:
    image = torch.rand(1, 3, 20, 30)
    boxes = one([[2, 3, 10, 8], [0, 0, 3, 2], [25, 15, 30, 20]], [7, 8, 9])
    op = chain(("Crop", {"x_min": 5, "y_min": 4, "x_max": 25, "y_max": 16}))
    _, out = apply(op, image, boxes)
    # box 0: [-3,-1,5,4] clipped to [0,0,5,4] (half of it visible); box 1 left entirely; box 2
    # touches the crop's corner only (zero area): both dropped with their labels
    torch.testing.assert_close(out.boxes[0], torch.tensor([[0.0, 0.0, 5.0, 4.0]]))
    assert out.labels[0].tolist() == [7]
    torch.testing.assert_close(out.visible[0], torch.tensor([0.5]))


def test_min_visibility_and_min_area_drop_boxes() -> None:
    image = torch.rand(1, 3, 20, 30)
    crop = chain(("Crop", {"x_min": 5, "y_min": 4, "x_max": 25, "y_max": 16}))
    assert apply(crop, image, one(BOX, min_visibility=0.6))[1].boxes[0].shape == (0, 4)
    assert apply(crop, image, one(BOX, min_visibility=0.4))[1].boxes[0].shape == (1, 4)
    assert apply(crop, image, one(BOX, min_area=20.0))[1].boxes[0].shape == (0, 4)  # 5*4 = 20
    assert apply(crop, image, one(BOX, min_area=19.0))[1].boxes[0].shape == (1, 4)


def test_boxes_are_clipped_after_every_op() -> None:
    """A crop then a shift back: the cut-off part must not come back as if it were visible."""
    image = torch.rand(1, 3, 20, 30)
    op = chain(("Crop", {"x_min": 10, "y_min": 0, "x_max": 30, "y_max": 20}),
               ("PadIfNeeded", {"min_height": 20, "min_width": 40, "position": "center"}))  # fmt: skip
    _, out = apply(op, image, one([[4, 3, 14, 8]]))
    # crop: [-6, 3, 4, 8] -> [0, 3, 4, 8]; pad 10 left -> [10, 3, 14, 8], not [4, 3, 14, 8]
    torch.testing.assert_close(out.boxes[0], torch.tensor([[10.0, 3.0, 14.0, 8.0]]))


def _boxed_batch(batch: int = 8) -> tuple[torch.Tensor, torch.Tensor, Boxes]:
    """Images with two filled rectangles each, their instance mask and their boxes."""
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 3, 40, 48, generator=gen)
    mask = torch.zeros(batch, 1, 40, 48)
    boxes = []
    for i in range(batch):
        x1, y1 = torch.randint(4, 20, (2,), generator=gen).tolist()
        w, h = torch.randint(6, 16, (2,), generator=gen).tolist()
        rects = [[x1, y1, x1 + w, y1 + h], [30, 26, 44, 36]]
        for n, (a, b, c, d) in enumerate(rects, start=1):
            mask[i, 0, b:d, a:c] = n
        boxes.append(torch.tensor(rects, dtype=torch.float32))
    labels = [torch.tensor([1, 2]) for _ in range(batch)]
    return image, mask, Boxes(boxes, labels)


def _tight(mask: torch.Tensor, label: int) -> torch.Tensor | None:
    ys, xs = (mask.round() == label).nonzero(as_tuple=True)
    if not len(xs):
        return None
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


@pytest.mark.parametrize(
    ("name", "params", "tolerance"),
    [
        ("HorizontalFlip", {"p": 0.5}, 0.0),
        ("Flip", {"p": 0.8}, 0.0),
        ("RandomRotate90", {"p": 0.7}, 0.0),  # non-square: the image turns on its side
        ("RandomCrop", {"height": 30, "width": 30}, 0.0),
        ("RandomCrop", {"size": [40, 48], "padding": 4}, 0.0),
        ("Transpose", {"p": 0.5}, 0.0),
        ("OneOf", {"p": 0.9, "transforms": [{"name": "HorizontalFlip"},
                                             {"name": "VerticalFlip"}]}, 0.0),
        ("RandomResizedCrop", {"height": 32, "width": 32, "scale": [0.5, 1.0]}, 1.0),
        # constant borders: albumentations' default (reflect-101) mirrors objects into the
        # mask, which boxes (as in albumentations) do not follow
        ("ShiftScaleRotate", {"p": 1.0, "rotate_limit": 0, "border_mode": 0}, 1.0),
        ("Affine", {"p": 1.0, "scale": [0.8, 1.2], "translate_percent": 0.1}, 1.0),
    ],
)  # fmt: skip
def test_boxes_follow_the_pixels_of_random_ops(
    name: str, params: dict[str, Any], tolerance: float
) -> None:
    """Each box equals the tight box of its rectangle in the warped mask (nearest resampling
    moves pixel edges by up to a pixel); a box is dropped exactly when its rectangle left."""
    torch.manual_seed(3)
    image, mask, boxes = _boxed_batch()
    _, (out_mask,), out = chain((name, params))(image, [mask], boxes)
    for i in range(len(out)):
        for label in (1, 2):
            expected = _tight(out_mask[i, 0], label)
            present = (out.labels[i] == label).nonzero().flatten().tolist()
            if expected is None:
                assert not present
                continue
            assert present, f"sample {i}: box {label} dropped but its pixels are there"
            got = out.boxes[i][present[0]]
            assert (got - expected).abs().max() <= tolerance + 1e-4, (i, label, got, expected)


def test_rotation_gives_the_enclosing_box() -> None:
    torch.manual_seed(0)
    image, mask, boxes = _boxed_batch(4)
    rotate = ("Rotate", {"limit": 30, "p": 1.0, "border_mode": 0})  # no mirrored objects
    _, (out_mask,), out = chain(rotate)(image, [mask], boxes)
    for i in range(4):
        for j, label in enumerate(out.labels[i].tolist()):
            tight = _tight(out_mask[i, 0], label)
            assert tight is not None
            box = out.boxes[i][j]
            assert (box[:2] <= tight[:2] + 1).all() and (box[2:] >= tight[2:] - 1).all()


def test_photometric_ops_leave_boxes_alone() -> None:
    image, _, boxes = _boxed_batch()
    op = chain(("ColorJitter", {"p": 1.0}), ("GaussNoise", {"p": 1.0}),
               ("CoarseDropout", {"p": 1.0}), ("Normalize", {}), ("ToTensorV2", {}))  # fmt: skip
    _, _, out = op(image, [], boxes)
    for a, b in zip(out.boxes, boxes.boxes, strict=True):
        assert torch.equal(a, b)


def test_ops_that_cannot_move_boxes_refuse_them() -> None:
    image, _, boxes = _boxed_batch(2)
    elastic = chain(("RandomElasticTransform", {"p": 1.0}))  # Kornia's own
    assert elastic(image, [])[0].shape == image.shape  # fine without boxes
    with pytest.raises(OkcError, match="RandomElasticTransform cannot move bounding boxes"):
        elastic(image, [], boxes)

    class Plain(nn.Module):  # a user op on the old (image, masks) contract
        def forward(self, image: torch.Tensor, masks: list[torch.Tensor]) -> Any:
            return image, masks

    with pytest.raises(OkcError, match="Plain cannot move bounding boxes"):
        Chain([Plain()])(image, [], boxes)


def test_without_boxes_ops_keep_the_two_value_contract() -> None:
    image = torch.rand(2, 3, 8, 8)
    out = chain(("HorizontalFlip", {"p": 1.0}))(image, [])
    assert len(out) == 2 and torch.equal(out[0], image.flip(-1))
