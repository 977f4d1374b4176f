"""No augmentation parameter is silently ignored: for every registered augmentation, each
parameter of its signature is listed here with non-default values that must change the output
(image, label maps or boxes, same seed) or be refused with an error naming the parameter; a
parameter that cannot change a tiny random batch is listed with the reason."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import torch

from okc.data.augment import build_ops
from okc.data.ops import Boxes, Chain, box_problem
from okc.errors import OkcError
from okc.registry import AUGMENTATIONS


@attrs.frozen
class Change:
    """``params`` (on top of the op's base) must give another output than ``baseline``."""

    param: str
    params: dict[str, Any]
    baseline: dict[str, Any] = attrs.field(factory=dict)
    alone: bool = False  # True: without the op's base params


@attrs.frozen
class Refuse:
    """``params`` must be refused with an error matching ``match`` (and naming ``param``)."""

    param: str
    params: dict[str, Any]
    match: str = ""
    on_data: bool = False  # True: refused when it meets the data (a channel count), not built


@attrs.frozen
class Inert:
    """``param`` cannot change the output of a tiny random batch, for ``reason``."""

    param: str
    reason: str


def vary(param: str, *values: Any, **context: Any) -> list[Change]:
    """One Change per value of ``param``, with ``context`` set in both runs."""
    return [Change(param, {**context, param: v}, dict(context)) for v in values]


def refuse(param: str, *values: Any, match: str = "", **context: Any) -> list[Refuse]:
    return [Refuse(param, {**context, param: v}, match) for v in values]


HW = {"height": 8, "width": 12}
FLIP = [{"name": "HorizontalFlip", "params": {"p": 1.0}}]
TWO = [{"name": "HorizontalFlip"}, {"name": "VerticalFlip"}]
THREE = [*TWO, {"name": "InvertImg"}]
P1 = {"p": 1.0}
BORDERS = (0, 1, 2, 3)  # against the default 4 (reflect-101)


def warp_rows(**angle: Any) -> list[Any]:
    """border_mode, value, mask_value, interpolation of a warp whose base shows its borders."""
    return [
        *vary("border_mode", *BORDERS),
        *refuse("border_mode", 5, "mirror", match="unsupported border mode"),
        *vary("value", 200, [255, 0, 0], border_mode=0),
        Refuse("value", {"value": [1, 2], "border_mode": 0}, "2 fill values", on_data=True),
        *vary("mask_value", 7, border_mode=0),
        *vary("interpolation", 0, 2, 4),
        *refuse("interpolation", 9, match="unknown interpolation"),
        Inert("interpolation", "3 (INTER_AREA): cv2's warps read it as INTER_LINEAR, the default"),
    ]


def probability(default: float, other: float) -> list[Any]:
    return vary("p", other) if other != default else []


SIZE_P = refuse("p", 0.5, match="must have p=1")

TABLE: dict[str, tuple[dict[str, Any], list[Any]]] = {
    # --- containers
    "Compose": ({"transforms": FLIP}, [
        *vary("transforms", [{"name": "VerticalFlip", "params": P1}]), *vary("p", 0.0)]),
    "Sequential": ({"transforms": FLIP}, [
        *vary("transforms", [{"name": "VerticalFlip", "params": P1}]), *vary("p", 1.0)]),
    "OneOf": ({"transforms": TWO}, [
        *vary("transforms", [{"name": "InvertImg"}]), *vary("p", 1.0)]),
    "SomeOf": ({"transforms": THREE}, [
        *vary("transforms", TWO), *vary("n", 2), *vary("replace", True), *vary("p", 0.0),
        *refuse("n", 4, match="n=4 but 3 transforms")]),
    # --- size ops
    "Resize": (HW, [
        *vary("height", 10), *vary("width", 10),
        Change("size", {"size": [8, 10]}, HW, alone=True),
        Change("side", {"size": 8, "side": "long"}, {"size": 8}, alone=True),
        *refuse("size", 8, match="not both"),
        *refuse("side", "long", match="int size only"),
        *vary("interpolation", 0, 2, 4), *vary("interpolation", 3, antialias=False),
        *refuse("interpolation", "lanczos9", match="unknown interpolation"),
        *vary("resample", "nearest"), *vary("antialias", True), *SIZE_P]),
    "LongestMaxSize": ({"max_size": 10}, [
        *vary("max_size", 12), *vary("interpolation", 0), *vary("resample", "bicubic"),
        *refuse("max_size", [8, 10], match="a list"), *SIZE_P]),
    "SmallestMaxSize": ({"max_size": 10}, [
        *vary("max_size", 12), *vary("interpolation", 0), *vary("resample", "bicubic"),
        *refuse("max_size", [8, 10], match="a list"), *SIZE_P]),
    "FitResize": ({"max_height": 10, "max_width": 10}, [
        *vary("max_height", 6), *vary("max_width", 30), *vary("interpolation", 0), *SIZE_P]),
    "CenterCrop": (HW, [
        *vary("height", 10), *vary("width", 10), Change("size", {"size": [6, 6]}, HW, alone=True),
        *SIZE_P]),
    "Crop": ({}, [
        *vary("x_min", 2), *vary("y_min", 2), *vary("x_max", 10), *vary("y_max", 10),
        *refuse("x_max", 0, match="x_min < x_max"), *SIZE_P]),
    "PadIfNeeded": ({"min_height": 24, "min_width": 30}, [
        *vary("min_height", 28), *vary("min_width", 26),
        Change("pad_height_divisor", {"min_height": None, "pad_height_divisor": 7}),
        Change("pad_width_divisor", {"min_width": None, "pad_width_divisor": 7}),
        *refuse("pad_height_divisor", 7, match="exactly one of min_height"),
        *refuse("pad_width_divisor", 7, match="exactly one of min_width"),
        *vary("position", "top_left", "top_right", "bottom_left", "bottom_right"),
        *refuse("position", "random", match="random places each sample"),
        *vary("border_mode", *BORDERS), *refuse("border_mode", 7, match="unsupported"),
        *vary("value", 100, [0, 255, 0], border_mode=0),
        *vary("mask_value", 9, border_mode=0), *SIZE_P]),
    # --- flips and turns
    "HorizontalFlip": (P1, vary("p", 0.0)),
    "VerticalFlip": (P1, vary("p", 0.0)),
    "Flip": (P1, vary("p", 0.0)),
    "Transpose": (P1, vary("p", 0.0)),
    "RandomRotate90": (P1, vary("p", 0.0)),
    # --- warps
    "Rotate": ({"p": 1.0, "limit": [40, 40]}, [
        *vary("limit", [10, 10], 25), *warp_rows(),
        *vary("rotate_method", "ellipse"), *refuse("rotate_method", "box", match="rotate_method"),
        *refuse("crop_border", True, match="its own size"), *vary("p", 0.0)]),
    "SafeRotate": ({"p": 1.0, "limit": [40, 40]}, [
        *vary("limit", [10, 10], 25), *warp_rows(), *vary("p", 0.0)]),
    "ShiftScaleRotate": ({"p": 1.0, "rotate_limit": [30, 30]}, [
        *vary("shift_limit", 0.2, [0.1, 0.1]), *vary("scale_limit", 0.3, [0.2, 0.2]),
        *vary("rotate_limit", 10, [5, 5]), *vary("shift_limit_x", [0.2, 0.2]),
        *vary("shift_limit_y", [0.2, 0.2]), *warp_rows(),
        *vary("rotate_method", "ellipse"), *refuse("rotate_method", "box", match="rotate_method"),
        *vary("p", 0.0)]),
    "Affine": ({"p": 1.0}, [
        *vary("scale", 1.2, [0.5, 0.6], {"x": 1.3}), *vary("translate_percent", 0.1, {"y": 0.2}),
        *vary("translate_px", 3, [2, 4], {"x": [1, 3]}),
        *refuse("translate_px", 3, match="not both", translate_percent=0.1),
        *refuse("scale", {"z": 1}, match="keys x and/or y"),
        *vary("rotate", 20, [10, 30]), *vary("shear", 15, {"y": [5, 10]}),
        *vary("interpolation", 0, 2, 4),
        Inert("interpolation", "3 (INTER_AREA): cv2's warps read it as INTER_LINEAR, the default"),
        *refuse("mask_interpolation", 1, match="nearest only"),
        Inert("mask_interpolation", "0 (nearest), its default, is the only value okc takes"),
        *vary("cval", 90, rotate=30), *vary("cval_mask", 5, rotate=30),
        *vary("mode", 1, 2, 3, 4, rotate=30), *refuse("mode", 9, match="unsupported"),
        *refuse("fit_output", True, match="its own size"),
        *vary("keep_ratio", True, scale=[0.5, 1.5]),
        *refuse("keep_ratio", True, match="same scale range", scale={"x": 1.0, "y": 2.0}),
        *vary("p", 0.0)]),
    "Perspective": ({"p": 1.0, "scale": [0.1, 0.2]}, [
        *vary("scale", 0.3, [0.2, 0.3]), *refuse("keep_size", False, match="its own size"),
        *vary("pad_mode", 1, 2, 3, 4), *refuse("pad_mode", 6, match="unsupported"),
        *vary("pad_val", 255, fit_output=True), *vary("mask_pad_val", 3, fit_output=True),
        *vary("fit_output", True),
        *vary("interpolation", 0, 2), *vary("p", 0.0)]),
    "ElasticTransform": ({"p": 1.0, "alpha": 30, "sigma": 4}, [
        *vary("alpha", 60), *vary("sigma", 2), *vary("alpha_affine", 5),
        *warp_rows(), *vary("approximate", True), *vary("same_dxdy", True), *vary("p", 0.0)]),
    "GridDistortion": ({"p": 1.0, "distort_limit": [0.3, 0.3]}, [
        *vary("num_steps", 3), *refuse("num_steps", 0, match="num_steps"),
        *vary("distort_limit", 0.5, [-0.2, -0.2]), *vary("normalized", True), *warp_rows(),
        *vary("p", 0.0)]),
    "OpticalDistortion": ({"p": 1.0, "distort_limit": [0.5, 0.5]}, [
        *vary("distort_limit", 0.8, [-0.5, -0.5]), *vary("shift_limit", [3, 3]),
        *warp_rows(), *vary("p", 0.0)]),
    "RandomCrop": (HW, [
        *vary("height", 10), *vary("width", 10), Change("size", {"size": [6, 6]}, HW, alone=True),
        Change("padding", {"size": [16, 20], "padding": 3}, {"size": [16, 20]}, alone=True),
        Change("pad_if_needed", {"size": [18, 22], "pad_if_needed": True},
               {"size": [18, 22], "padding": [0, 0, 2, 2]}, alone=True),
        Change("fill", {"size": [16, 20], "padding": 3, "fill": 1.0},
               {"size": [16, 20], "padding": 3}, alone=True),
        Change("padding_mode", {"size": [16, 20], "padding": 3, "padding_mode": "reflect"},
               {"size": [16, 20], "padding": 3}, alone=True), *SIZE_P]),
    "RandomResizedCrop": (HW, [
        *vary("height", 10), *vary("width", 10), Change("size", {"size": [6, 6]}, HW, alone=True),
        *vary("scale", [0.2, 0.3]), *vary("ratio", [0.5, 0.6]), *vary("interpolation", 0, 2),
        Inert("interpolation", "3 (INTER_AREA): approximated by bilinear, the default"),
        *vary("resample", "nearest"), *SIZE_P]),
    "RandomSizedCrop": ({"min_max_height": [8, 12], **HW}, [
        *vary("min_max_height", [4, 6]), *refuse("min_max_height", [0, 4], match="1 <= min"),
        *vary("height", 10), *vary("width", 10), *vary("w2h_ratio", 0.5),
        *vary("interpolation", 0, 2), *SIZE_P]),
    # --- dropout
    "CoarseDropout": ({"p": 1.0}, [
        *vary("max_holes", 2), *vary("max_height", 3), *vary("max_width", 0.5),
        *vary("min_holes", 2), *vary("min_height", 2), *vary("min_width", 2),
        *vary("fill_value", 255), *vary("mask_fill_value", 9),
        *refuse("min_holes", 9, match="min_holes"), *vary("p", 0.0)]),
    "Cutout": ({"p": 1.0}, [
        *vary("num_holes", 2), *vary("max_h_size", 3), *vary("max_w_size", 3),
        *vary("fill_value", 255), *vary("p", 0.0)]),
    # --- deterministic photometric
    "Normalize": ({}, [
        *vary("mean", 0.5), *vary("std", [0.5, 0.5, 0.5]), *vary("max_pixel_value", 1.0),
        *refuse("std", 0, match="std must not be 0"), *refuse("p", 0.5, match="p=1")]),
    "ToTensorV2": ({}, [
        Inert("transpose_mask", "okc's label maps are (H, W): no channel axis to move"),
        Inert("p", "albumentations always applies ToTensorV2 (always_apply=True); a no-op")]),
    "NoOp": ({}, [Inert("p", "the op does nothing, whatever p says")]),
    "ToFloat": ({}, [
        *vary("max_value", 1000), *refuse("max_value", -1, match="positive"),
        *refuse("p", 0.5, match="p=1")]),
    # --- colour
    "ColorJitter": (P1, [
        *vary("brightness", 0.5), *vary("contrast", 0.5), *vary("saturation", 0.5),
        *vary("hue", 0.4), *vary("same_on_batch", True), *vary("p", 0.0)]),
    "RandomBrightnessContrast": (P1, [
        *vary("brightness_limit", 0.4), *vary("contrast_limit", [0.3, 0.3]),
        *vary("brightness_by_max", False), *vary("p", 0.0)]),
    "RandomBrightness": (P1, [
        *vary("limit", 0.5), Change("brightness", {"brightness": [1.3, 1.3]}),
        *refuse("brightness", [1.1, 1.2], match="not both", limit=0.2), *vary("p", 0.0)]),
    "RandomContrast": (P1, [
        *vary("limit", 0.5), Change("contrast", {"contrast": [1.3, 1.3]}),
        *refuse("contrast", [1.1, 1.2], match="not both", limit=0.2), *vary("p", 0.0)]),
    "RandomGamma": (P1, [
        *vary("gamma_limit", [50, 60]), Change("gamma", {"gamma": [2.0, 2.0]}),
        *refuse("gamma", [1.0, 2.0], match="not both", gamma_limit=[80, 120]),
        *refuse("gamma_limit", 80, match="must be positive"),
        *vary("gain", [0.5, 0.5]),
        Inert("eps", "deprecated and ignored by albumentations 1.3.0 too (okc warns)"),
        *vary("p", 0.0)]),
    "HueSaturationValue": (P1, [
        *vary("hue_shift_limit", [40, 40]), *vary("sat_shift_limit", [-60, -60]),
        *vary("val_shift_limit", 50), *vary("p", 0.0)]),
    "RGBShift": (P1, [
        *vary("r_shift_limit", 60), *vary("g_shift_limit", [30, 40]), *vary("b_shift_limit", 50),
        *vary("p", 0.0)]),
    "FancyPCA": (P1, [*vary("alpha", 1.0), *vary("p", 0.0)]),
    "ChannelShuffle": (P1, vary("p", 0.0)),
    "ChannelDropout": (P1, [
        *vary("channel_drop_range", [2, 2]), *vary("fill_value", 128),
        *refuse("channel_drop_range", [0, 1], match="channel_drop_range"), *vary("p", 0.0)]),
    "ToGray": (P1, vary("p", 0.0)),
    "Equalize": (P1, [
        *vary("mode", "pil"), *vary("by_channels", False), *refuse("mode", "np", match="mode"),
        *vary("p", 0.0)]),
    "InvertImg": (P1, vary("p", 0.0)),
    "Posterize": (P1, [
        *vary("num_bits", 2, [1, 3], [1, 4, 7]), *refuse("num_bits", 9, match="num_bits"),
        *vary("p", 0.0)]),
    "Solarize": (P1, [*vary("threshold", 60, [30, 90]), *vary("p", 0.0)]),
    "CLAHE": (P1, [
        *vary("clip_limit", 20.0, tile_grid_size=[2, 2]), *vary("tile_grid_size", [2, 2]),
        *vary("p", 0.0)]),
    "Sharpen": (P1, [
        *vary("alpha", [0.9, 1.0]), *vary("lightness", [3.0, 4.0]),
        *refuse("alpha", [0.5, 2.0], match="alpha"), *vary("p", 0.0)]),
    # --- noise, compression, blur
    "GaussNoise": (P1, [
        *vary("var_limit", 500.0, [100, 200]), *vary("mean", 20.0), *vary("per_channel", False),
        *refuse("var_limit", [-1, 2], match="negative"), *vary("p", 0.0)]),
    "MultiplicativeNoise": (P1, [
        *vary("multiplier", 0.5, [0.2, 0.4]), *vary("per_channel", True),
        *vary("elementwise", True), *vary("p", 0.0)]),
    "ImageCompression": (P1, [
        *vary("quality_lower", 5), *vary("quality_upper", 50, quality_lower=5),
        *vary("quality_range", [5, 10]),
        *refuse("compression_type", 1, "webp", match="only JPEG"),
        Inert("compression_type", "0/'jpeg', its other spellings, are the default itself"),
        *vary("p", 0.0)]),
    "JpegCompression": (P1, [
        *vary("quality_lower", 5), *vary("quality_upper", 50, quality_lower=5),
        *refuse("quality_lower", 101, match="quality"), *vary("p", 0.0)]),
    "Blur": (P1, [*vary("blur_limit", 3, [5, 5], [4, 4]), *vary("p", 0.0)]),
    "GaussianBlur": (P1, [
        *vary("blur_limit", [7, 7], 9), *vary("sigma_limit", [3.0, 3.0], 2.0),
        *refuse("blur_limit", [4, 4], match="odd"), *vary("p", 0.0)]),
    "MedianBlur": (P1, [
        *vary("blur_limit", [3, 3], 5), *refuse("blur_limit", [4, 4], match="odd"),
        *vary("p", 0.0)]),
    "MotionBlur": (P1, [
        *vary("blur_limit", [9, 9], 5), *vary("allow_shifted", False),
        *refuse("blur_limit", [3, 4], match="odd"), *vary("p", 0.0)]),
}  # fmt: skip


def _registered() -> dict[str, Callable[..., Any]]:
    """okc's own registered augmentations (not Kornia's fallback, nor tests' registrations)."""
    names = AUGMENTATIONS.registered()
    return {n: AUGMENTATIONS.get(n) for n in names if AUGMENTATIONS.get(n).__module__.startswith(
        "okc.")}  # fmt: skip


def _batch() -> tuple[torch.Tensor, list[torch.Tensor], Boxes]:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(4, 3, 16, 20, generator=gen)
    mask = torch.randint(0, 3, (4, 1, 16, 20), generator=gen).float()
    boxes = [torch.tensor([[1.0, 2.0, 9.0, 11.0], [12.0, 3.0, 19.0, 15.0]]) for _ in range(4)]
    return image, [mask], Boxes(boxes, [torch.tensor([1, 2])] * 4)


def _run(name: str, params: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, list]:
    op = Chain(build_ops([{"name": name, "params": params}]))
    image, masks, boxes = _batch()
    torch.manual_seed(1)
    if box_problem(op) is not None:
        out, (mask,) = op(image, masks)
        return out, mask, []
    out, (mask,), moved = op(image, masks, boxes)
    return out, mask, [*moved.boxes]


def _differs(a: tuple, b: tuple) -> bool:
    if a[0].shape != b[0].shape or not torch.allclose(a[0], b[0], atol=1e-6):
        return True
    if not torch.equal(a[1], b[1]):
        return True
    return any(
        x.shape != y.shape or not torch.allclose(x, y) for x, y in zip(a[2], b[2], strict=True)
    )


def test_every_parameter_of_every_augmentation_is_listed() -> None:
    missing = []
    for name, target in _registered().items():
        assert name in TABLE, f"{name} has no row in TABLE"
        listed = {row.param for row in TABLE[name][1]}
        params = set(inspect.signature(target).parameters)
        missing += [f"{name}.{p}" for p in sorted(params - listed)]
        extra = listed - params
        assert not extra, f"{name}: TABLE lists parameters it does not take: {extra}"
    assert not missing, f"parameters without a row: {missing}"
    assert not set(TABLE) - set(_registered()), "TABLE rows for unregistered names"


CHANGES = [(n, c) for n, (_, rows) in TABLE.items() for c in rows if isinstance(c, Change)]
REFUSALS = [(n, r) for n, (_, rows) in TABLE.items() for r in rows if isinstance(r, Refuse)]


@pytest.mark.parametrize(
    ("name", "row"), CHANGES, ids=[f"{n}-{c.param}-{c.params[c.param]}" for n, c in CHANGES]
)
def test_a_non_default_value_changes_the_output(name: str, row: Change) -> None:
    base = {} if row.alone else TABLE[name][0]
    changed = _run(name, {**base, **row.params})
    baseline = _run(name, {**base, **row.baseline})
    assert _differs(changed, baseline), f"{name}: {row.params} gives the output of {row.baseline}"


@pytest.mark.parametrize(
    ("name", "row"), REFUSALS, ids=[f"{n}-{r.param}-{r.params[r.param]}" for n, r in REFUSALS]
)
def test_an_unsupported_value_is_refused_naming_it(name: str, row: Refuse) -> None:
    params = {**TABLE[name][0], **row.params}
    where = "" if row.on_data else re.escape("0.params") + ".*"
    with pytest.raises(OkcError, match=where + row.match) as info:
        _run(name, params)
    assert row.param in str(info.value) or "0.params:" in str(info.value), str(info.value)
