"""Cases of okc's registered augmentations (see README.md): each is built from config and run on
a 2x3x16x16 batch with a label map by the default check (float out, labels never blended, and
the image changed: an identity op fails it).

Random ops get ``p: 1`` so that the check runs the op itself, not only its probability gate.
The declared no-ops (``NO_OPS``) are checked to leave the batch exactly as it was instead.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from contracts.runners import Case, run_augmentation
from okc.registry import AUGMENTATIONS as REGISTRY

_HW = {"height": 12, "width": 12}
_INNER = [
    {"name": "HorizontalFlip", "params": {"p": 1.0}},
    {"name": "ToGray", "params": {"p": 1.0}},
]
# Params beyond p: 1 (required ones, or sizes that fit a 16x16 image).
PARAMS: dict[str, dict[str, Any]] = {
    "Resize": _HW,
    "CenterCrop": _HW,
    "RandomCrop": _HW,
    "RandomResizedCrop": _HW,
    "RandomSizedCrop": {"min_max_height": [8, 12], **_HW},
    "Crop": {"x_min": 2, "y_min": 2, "x_max": 14, "y_max": 12},
    "PadIfNeeded": {"min_height": 20, "min_width": 24},
    "LongestMaxSize": {"max_size": 24},
    "SmallestMaxSize": {"max_size": 20},
    "FitResize": {"max_height": 20, "max_width": 10},
    "Compose": {"transforms": _INNER},
    "Sequential": {"transforms": _INNER},
    "OneOf": {"transforms": _INNER},
    "SomeOf": {"transforms": _INNER, "n": 2},
    "ElasticTransform": {"alpha": 20, "sigma": 3},
    "CLAHE": {"tile_grid_size": [2, 2]},
}
# Ops whose p must stay 1 or that take none worth forcing.
_DETERMINISTIC = {"Normalize", "ToTensorV2", "NoOp", "ToFloat"}


def _params(name: str) -> dict[str, Any]:
    params = dict(PARAMS.get(name, {}))
    if name not in _DETERMINISTIC and "p" in _signature(name):
        params.setdefault("p", 1.0)
    return params


def _signature(name: str) -> set[str]:
    return set(inspect.signature(REGISTRY.get(name)).parameters)


_NAMES = (
    "Affine", "Blur", "CLAHE", "CenterCrop", "ChannelDropout", "ChannelShuffle", "CoarseDropout",
    "ColorJitter", "Compose", "Crop", "Cutout", "ElasticTransform", "Equalize", "FancyPCA",
    "FitResize", "Flip", "GaussNoise", "GaussianBlur", "GridDistortion", "HorizontalFlip",
    "HueSaturationValue", "ImageCompression", "InvertImg", "JpegCompression", "LongestMaxSize",
    "MedianBlur", "MotionBlur", "MultiplicativeNoise", "NoOp", "Normalize", "OneOf",
    "OpticalDistortion", "PadIfNeeded", "Perspective", "Posterize", "RGBShift", "RandomBrightness",
    "RandomBrightnessContrast", "RandomContrast", "RandomCrop", "RandomGamma", "RandomResizedCrop",
    "RandomRotate90", "RandomSizedCrop", "Resize", "Rotate", "SafeRotate", "Sequential", "Sharpen",
    "ShiftScaleRotate", "SmallestMaxSize", "Solarize", "SomeOf", "ToFloat", "ToGray",
    "ToTensorV2", "Transpose", "VerticalFlip",
)  # fmt: skip

# Ops that by definition leave okc's float batch alone (okc's images are tensors in [0, 1]).
NO_OPS = {"ToTensorV2", "NoOp", "ToFloat"}


def check_no_op(name: str, case: Case, **_: Any) -> None:
    image, mask, out, out_mask = run_augmentation(name, case)
    assert torch.equal(out, image) and torch.equal(out_mask, mask), f"{name} changed the batch"


CASES = {
    ("augmentations", name): Case(
        params=_params(name), check=check_no_op if name in NO_OPS else None
    )
    for name in _NAMES
}
