"""okc's warp and filter primitives against OpenCV itself, the library albumentations runs on
(part of the fidelity lane: cv2 comes with the ``fidelity`` extra of ``dev``, and its absence
fails these tests rather than skipping them; okc itself does not depend on cv2)."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from okc.data import borders
from okc.data.augment import build_ops
from okc.data.ops import Chain

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (20, 28, 3)).astype(np.uint8)
H, W = IMAGE.shape[:2]


def okc_op(name: str, **params: Any) -> np.ndarray:
    op = Chain(build_ops([{"name": name, "params": {"p": 1.0, **params}}]))
    out, _ = op(torch.from_numpy(IMAGE).permute(2, 0, 1)[None].float() / 255, [])
    return out[0].permute(1, 2, 0).numpy() * 255


@pytest.mark.parametrize("border", range(5))
def test_padding_is_copy_make_border(border: int) -> None:
    image = torch.from_numpy(IMAGE).permute(2, 0, 1).float()
    fill = torch.tensor([5.0, 6.0, 7.0]).view(3, 1, 1)
    out = borders.pad(image, 31, 3, 40, 2, border=border, fill=fill).permute(1, 2, 0).numpy()
    expected = cv2.copyMakeBorder(IMAGE, 31, 3, 40, 2, border, value=(5, 6, 7))
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("border", range(5))
@pytest.mark.parametrize(("code", "name"), [(0, "nearest"), (1, "bilinear"), (2, "bicubic")])
def test_remap_is_cv2_remap(border: int, code: int, name: str) -> None:
    """Exact on coordinates cv2 represents exactly (it rounds maps to 1/32 pixel)."""
    maps = [np.round(RNG.uniform(-9, 35, (H, W)) * 32).astype(np.float32) / 32 for _ in "xy"]
    if name == "nearest":  # off the half-pixel ties, which cv2 and torch round differently
        maps = [m + np.float32(1 / 64) for m in maps]
    image = IMAGE.astype(np.float32)
    expected = cv2.remap(image, *maps, code, borderMode=border, borderValue=(5, 6, 7))
    grid = torch.from_numpy(np.stack(maps, -1))[None]
    out = borders.remap(
        torch.from_numpy(image).permute(2, 0, 1)[None], grid, resample=name, border=border,
        fill=torch.tensor([5.0, 6.0, 7.0]).view(3, 1, 1),
    )[0].permute(1, 2, 0).numpy()  # fmt: skip
    np.testing.assert_allclose(out, expected, atol=1e-3)


def _close(out: np.ndarray, expected: np.ndarray) -> None:
    """Within cv2's fixed-point interpolation (1/32 pixel, uint8 rounding) on noise images."""
    diff = np.abs(out - expected.astype(np.float32))
    assert diff.max() <= 6 and diff.mean() <= 1.2, (diff.max(), diff.mean())


@pytest.mark.parametrize("border", range(5))
def test_shift_scale_rotate_is_cv2s_warp(border: int) -> None:
    angle, scale, dx, dy = 17.0, 1.1, 0.05, -0.1
    m = cv2.getRotationMatrix2D((W / 2 - 0.5, H / 2 - 0.5), angle, scale)
    m[0, 2] += dx * W
    m[1, 2] += dy * H
    expected = cv2.warpAffine(IMAGE, m, (W, H), flags=1, borderMode=border,
                              borderValue=(10, 20, 30))  # fmt: skip
    out = okc_op("ShiftScaleRotate", shift_limit_x=[dx, dx], shift_limit_y=[dy, dy],
                 scale_limit=[scale - 1] * 2, rotate_limit=[angle] * 2, border_mode=border,
                 value=[10, 20, 30])  # fmt: skip
    _close(out, expected)


def test_safe_rotate_is_albumentations_matrix() -> None:
    angle = 33.0
    m = cv2.getRotationMatrix2D((W / 2, H / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    new_w, new_h = math.ceil(H * sin + W * cos), math.ceil(H * cos + W * sin)
    m[0, 2] += new_w / 2 - W / 2
    m[1, 2] += new_h / 2 - H / 2
    full = np.vstack([m, [0, 0, 1]])
    m = (np.diag([W / new_w, H / new_h, 1.0]) @ full)[:2]
    _close(okc_op("SafeRotate", limit=[angle, angle]), cv2.warpAffine(IMAGE, m, (W, H), flags=1,
                                                                        borderMode=4))  # fmt: skip


def test_optical_distortion_is_undistort_rectify_map_centred() -> None:
    k = 0.3
    camera = np.array([[W, 0, (W - 1) / 2], [0, H, (H - 1) / 2], [0, 0, 1]], np.float32)
    maps = cv2.initUndistortRectifyMap(
        camera, np.array([k, k, 0, 0, 0], np.float32), None, camera, (W, H), cv2.CV_32FC1
    )
    expected = cv2.remap(IMAGE, *maps, 1, borderMode=4)
    _close(okc_op("OpticalDistortion", distort_limit=[k, k], shift_limit=0), expected)


@pytest.mark.parametrize(("name", "params", "reference"), [
    ("Equalize", {}, lambda im: np.stack([cv2.equalizeHist(im[..., i]) for i in range(3)], -1)),
    ("MedianBlur", {"blur_limit": [5, 5]}, lambda im: cv2.medianBlur(im, 5)),
    ("Blur", {"blur_limit": [4, 4]}, lambda im: cv2.blur(im, (4, 4))),
    ("GaussianBlur", {"blur_limit": [5, 5], "sigma_limit": [1.3, 1.3]},
     lambda im: cv2.GaussianBlur(im, (5, 5), 1.3)),
    ("GaussianBlur", {"blur_limit": [7, 7]}, lambda im: cv2.GaussianBlur(im, (7, 7), 0)),
])  # fmt: skip
def test_filters_match_cv2(name: str, params: dict, reference: Any) -> None:
    diff = np.abs(okc_op(name, **params) - reference(IMAGE).astype(np.float32))
    assert diff.max() <= 1.5, diff.max()  # cv2 rounds to uint8 (twice, separable); okc floats
