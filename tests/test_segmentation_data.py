"""Masks through okc's data pipeline: they stay aligned with their images, pixel for pixel, under
flips, crops, rotations and affine ops (nearest for masks), and keep their label values."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from okc.config.schema import DataItem, DataLoader, Dataset, Phase
from okc.data import build_pipeline
from okc.data.datasets import Shapes
from okc.registry import DATASETS

# A colour per class; class 0 is black because geometric ops fill images and masks with zeros.
COLORS = torch.tensor(
    [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]],
    dtype=torch.uint8,
)


class _PaintedShapes(Shapes):
    """Shapes whose image is its mask painted in ``COLORS``: the image says what the mask must be.

    Non-square (24 x 40), so that a transposed or mirrored mask cannot match by symmetry.
    """

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = super().__getitem__(index)
        mask = sample["mask"][8:32].contiguous()
        return {"image": COLORS[mask].permute(2, 0, 1).contiguous(), "mask": mask, "index": index}


@pytest.fixture
def painted() -> Iterator[str]:
    name = "_PaintedShapesForTests"
    DATASETS.register(_PaintedShapes, name=name)
    yield name
    DATASETS._entries.pop(name)


def _decode(image: torch.Tensor) -> torch.Tensor:
    """The class of each pixel of a (B, 3, H, W) image in [0, 1]: its nearest colour."""
    pixels = image.permute(0, 2, 3, 1)[..., None, :] * 255  # (B, H, W, 1, 3)
    return (pixels - COLORS.float()).square().sum(-1).argmin(-1)


OPS = {
    "flips": [
        {"name": "HorizontalFlip", "params": {"p": 1.0}},
        {"name": "VerticalFlip", "params": {"p": 1.0}},
    ],
    "random_crop": [{"name": "RandomCrop", "params": {"height": 16, "width": 24}}],
    "resized_crop": [
        {
            "name": "RandomResizedCrop",
            "params": {"height": 20, "width": 20, "scale": [0.3, 1.0], "interpolation": 0},
        }
    ],
    "rotate": [{"name": "Rotate", "params": {"limit": 60, "interpolation": 0, "p": 1.0}}],
    "shift_scale_rotate": [
        {"name": "ShiftScaleRotate", "params": {"rotate_limit": 30, "interpolation": 0, "p": 1.0}}
    ],
    "rotate90_in_one_of": [
        {
            "name": "OneOf",
            "params": {
                "p": 1.0,
                "transforms": [
                    {"name": "RandomRotate90", "params": {"p": 1.0}},
                    {"name": "Transpose", "params": {"p": 1.0}},
                ],
            },
        }
    ],
}


def _run(name: str, augment: list[dict[str, Any]], transform: tuple = ()) -> tuple[dict, dict]:
    item = DataItem(
        dataset=Dataset(
            name=name,
            params={
                "num_samples": 16,
                "image_size": 40,
                "num_classes": 5,
                "num_shapes": 3,
                "with_mask": True,
            },
            transform=transform,
            augment=tuple(augment),
        ),
        dataloader=DataLoader(batch_size=16),
    )
    torch.manual_seed(0)
    pipe = build_pipeline(item, phase=Phase.TRAIN)
    cpu = next(iter(pipe))
    return cpu, pipe.to_device(dict(cpu))


@pytest.mark.parametrize("ops", OPS)
def test_masks_stay_aligned_with_their_images(painted: str, ops: str) -> None:
    cpu, out = _run(painted, OPS[ops])
    mask = out["mask"]
    assert (
        mask.dtype == torch.int64 and mask.shape == out["image"].shape[:1] + out["image"].shape[2:]
    )
    assert torch.equal(mask, _decode(out["image"]))  # every pixel, every sample
    assert set(mask.unique().tolist()) <= set(cpu["mask"].unique().tolist())  # no new labels
    if mask.shape == cpu["mask"].shape:  # the op did something (the check is not vacuous)
        assert not torch.equal(mask, cpu["mask"])


def test_bilinear_images_keep_nearest_masks(painted: str) -> None:
    """With TorchOk's default (bilinear) interpolation only pixels on class borders may differ."""
    _, out = _run(painted, [{"name": "Rotate", "params": {"limit": 45, "p": 1.0}}])
    agree = (out["mask"] == _decode(out["image"])).float().mean()
    assert agree > 0.95
    assert out["mask"].unique().tolist() == sorted(out["mask"].unique().tolist())
    assert set(out["mask"].unique().tolist()) <= set(range(6))  # labels, never blends of them


def test_per_sample_resize_uses_nearest_for_masks(painted: str) -> None:
    resize = ({"name": "Resize", "params": {"height": 37, "width": 53}},)  # bilinear for images
    cpu, out = _run(painted, [], transform=resize)
    assert cpu["mask"].shape == (16, 37, 53)
    assert set(cpu["mask"].unique().tolist()) <= set(range(6))
    agree = (out["mask"] == _decode(out["image"])).float().mean()
    assert agree > 0.95
