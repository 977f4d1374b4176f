"""Fidelity: okc's albumentations-named geometric ops (flips, turns, warps, crops, resizes,
padding) against albumentations 1.3.0 on the same image, label map and boxes (see fidelity.py
and the table in docs/data.md). Each random choice is forced: fixed magnitudes (``limit: [a, a]``,
both signs), and for discrete choices (flip axis, quarter turns, crop position) every choice
albumentations can make, each of which okc must draw and match."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch
from fidelity import IMAGE, SMOOTH, SQUARE, A, Case, albumentations_run, compare, cv2

from okc.data import rng

H, W = IMAGE.shape[:2]


def _positions(height: int, width: int, crop_h: int, crop_w: int) -> list[dict[str, Any]]:
    """albumentations' ``h_start``/``w_start`` for every crop position
    (y = int((H - h + 1) * h_start))."""

    def start(offset: int, positions: int) -> float:
        return (offset + 0.5) / positions

    return [
        {"h_start": start(y, height - crop_h + 1), "w_start": start(x, width - crop_w + 1)}
        for y in range(height - crop_h + 1)
        for x in range(width - crop_w + 1)
    ]


def _sign_cases() -> list[Case]:
    cases = []
    for s in (-1, 1):
        cases += [
            Case("Rotate", {"limit": [30 * s, 30 * s], "p": 1.0},
                 A.Rotate(limit=(30 * s, 30 * s), p=1), boxes=True),
            Case("Rotate", {"limit": [17 * s, 17 * s], "border_mode": 0, "value": [10, 20, 30],
                            "mask_value": 5, "p": 1.0},
                 A.Rotate(limit=(17 * s, 17 * s), border_mode=0, value=[10, 20, 30],
                          mask_value=5, p=1), image=SMOOTH, variant="border_mode: 0"),
            Case("SafeRotate", {"limit": [33 * s, 33 * s], "p": 1.0},
                 A.SafeRotate(limit=(33 * s, 33 * s), p=1), boxes=True),
            Case("ShiftScaleRotate",
                 {"shift_limit_x": [0.05 * s] * 2, "shift_limit_y": [-0.1 * s] * 2,
                  "scale_limit": [0.1 * s] * 2, "rotate_limit": [17 * s] * 2, "p": 1.0},
                 A.ShiftScaleRotate(shift_limit_x=(0.05 * s,) * 2, shift_limit_y=(-0.1 * s,) * 2,
                                    scale_limit=(0.1 * s,) * 2, rotate_limit=(17 * s,) * 2, p=1),
                 boxes=True),
            Case("Affine",
                 {"scale": 1 + 0.1 * s, "translate_percent": {"x": 0.1 * s, "y": -0.05 * s},
                  "rotate": 12 * s, "shear": {"x": 8 * s, "y": -5 * s}, "p": 1.0},
                 A.Affine(scale=1 + 0.1 * s, translate_percent={"x": 0.1 * s, "y": -0.05 * s},
                          rotate=12 * s, shear={"x": 8 * s, "y": -5 * s}, p=1), boxes=True,
                 variant="shear"),
            Case("Affine", {"scale": {"x": 1 + 0.1 * s, "y": 1 - 0.05 * s},
                            "translate_percent": 0.1 * s, "rotate": 12 * s, "p": 1.0},
                 A.Affine(scale={"x": 1 + 0.1 * s, "y": 1 - 0.05 * s},
                          translate_percent=0.1 * s, rotate=12 * s, p=1), boxes=True),
            Case("Affine", {"translate_px": {"x": 3 * s, "y": -2 * s}, "p": 1.0},
                 A.Affine(translate_px={"x": 3 * s, "y": -2 * s}, p=1), boxes=True),
            Case("GridDistortion", {"distort_limit": [0.3 * s] * 2, "p": 1.0},
                 A.GridDistortion(distort_limit=(0.3 * s,) * 2, p=1), image=SMOOTH),
            Case("OpticalDistortion", {"distort_limit": [0.3 * s] * 2, "shift_limit": 0,
                                       "p": 1.0},
                 A.OpticalDistortion(distort_limit=(0.3 * s,) * 2, shift_limit=0, p=1),
                 image=SMOOTH),
        ]  # fmt: skip
    return cases


def _perspective_reference(scale: float, n: int) -> Any:
    """albumentations' Perspective fed okc's corner jitter: okc draws (per sample: apply?, sigma,
    then the 4x2 normals) from the seeded torch stream; albumentations draws its normals from
    ``random_utils.normal``, which replays them, so both build their matrix from the same
    corners and the comparison is of the warp, not of the random numbers."""

    def reference(image: np.ndarray, mask: np.ndarray, boxes: np.ndarray) -> list:

        torch.manual_seed(0)
        rng.rand(n, device="cpu")  # okc's "apply?" draw
        rng.rand((n, 1, 1), device="cpu")  # sigma (a fixed range: scale itself)
        normals = rng.randn(n, 4, 2, device="cpu").double().numpy() * scale
        transform = A.Perspective(scale=(scale, scale), p=1)
        outputs, original = [], A.random_utils.normal
        try:
            for i in range(n):
                A.random_utils.normal = lambda *a, _i=i, **k: normals[_i]
                outputs.append(albumentations_run(transform, {}, image, mask, boxes))
        finally:
            A.random_utils.normal = original
        return outputs

    return reference


def _elastic_reference(alpha: float, sigma: float, alpha_affine: float, n: int) -> Any:
    """albumentations' ElasticTransform fed okc's random numbers: okc draws (per sample)
    apply?, the two U[0, 1) noise fields, then the anchors' U(-alpha_affine, alpha_affine) moves;
    albumentations' ``random_utils.rand`` and ``uniform`` replay them (square images: on others
    albumentations swaps the anchors' centre, see okc.data.warps)."""

    def reference(image: np.ndarray, mask: np.ndarray, boxes: np.ndarray) -> list:
        height, width = image.shape[:2]
        torch.manual_seed(0)
        rng.rand(n, device="cpu")  # okc's "apply?" draw
        noise = rng.rand(n, 2, height, width, device="cpu").double().numpy()
        moves = rng.rand(n, 3, 2, device="cpu").double().numpy() * 2 * alpha_affine - alpha_affine
        transform = A.ElasticTransform(alpha, sigma, alpha_affine, p=1)
        outputs, saved = [], (A.random_utils.rand, A.random_utils.uniform)
        try:
            for i in range(n):
                fields = itertools.cycle(noise[i])  # each target (image, mask) replays them
                A.random_utils.rand = lambda *a, _f=fields, **k: next(_f)
                A.random_utils.uniform = lambda *a, _i=i, **k: moves[_i]
                outputs.append(albumentations_run(transform, {}, image, mask, boxes))
        finally:
            A.random_utils.rand, A.random_utils.uniform = saved
        return outputs

    return reference


def _cases() -> list[Case]:
    s = SQUARE
    rrc = A.RandomResizedCrop(12, 14, scale=(0.5, 0.5), ratio=(1.0, 1.0), p=1)
    sized = A.RandomSizedCrop((10, 10), 12, 14, w2h_ratio=1.5, p=1)
    return [
        Case("HorizontalFlip", {"p": 1.0}, A.HorizontalFlip(p=1), boxes=True),
        Case("VerticalFlip", {"p": 1.0}, A.VerticalFlip(p=1), boxes=True),
        Case("Flip", {"p": 1.0}, A.Flip(p=1), [{"d": d} for d in (-1, 0, 1)], n=24, boxes=True),
        Case("Transpose", {"p": 1.0}, A.Transpose(p=1), image=s, boxes=True),
        Case(
            "RandomRotate90",
            {"p": 1.0},
            A.RandomRotate90(p=1),
            [{"factor": k} for k in range(4)],
            image=s,
            n=32,
            boxes=True,
        ),
        *_sign_cases(),
        Case(
            "Perspective",
            {"scale": [0.1, 0.1], "p": 1.0},
            n=6,
            image=SMOOTH,
            reference=_perspective_reference(0.1, 6),
            every_choice=False,
            boxes=True,
        ),
        Case(
            "ElasticTransform",
            {"alpha": 20, "alpha_affine": 0, "sigma": 4, "p": 1.0},
            n=3,
            image=SMOOTH[:32, :32],
            reference=_elastic_reference(20, 4, 0, 3),
        ),
        Case(
            "ElasticTransform",
            {"alpha": 0, "alpha_affine": 3, "sigma": 4, "p": 1.0},
            n=3,
            image=SMOOTH[:32, :32],
            reference=_elastic_reference(0, 4, 3, 3),
            variant="alpha_affine",
        ),
        Case(
            "ElasticTransform",
            {"alpha": 20, "alpha_affine": 3, "sigma": 4, "p": 1.0},
            n=3,
            image=SMOOTH[:32, :32],
            reference=_elastic_reference(20, 4, 3, 3),
            variant="alpha and alpha_affine",
        ),
        Case("Resize", {"height": 13, "width": 40, "p": 1.0}, A.Resize(13, 40), n=1, boxes=True),
        Case(
            "Resize",
            {"height": 10, "width": 14, "interpolation": 0, "p": 1.0},
            A.Resize(10, 14, interpolation=0),
            n=1,
        ),
        Case(
            "Resize",
            {"height": 10, "width": 14, "interpolation": 3, "p": 1.0},
            A.Resize(10, 14, interpolation=3),
            n=1,
            image=SMOOTH,
            variant="interpolation: 3",
        ),
        Case(
            "Resize",
            {"height": 13, "width": 40, "antialias": True, "p": 1.0},
            A.Resize(13, 40),
            n=1,
            boxes=True,
            variant="antialias: true",
        ),
        Case("FitResize", {"max_height": 14, "max_width": 40}, A.Resize(14, 20), n=1, boxes=True),
        Case("LongestMaxSize", {"max_size": 14}, A.LongestMaxSize(14), n=1, boxes=True),
        Case("SmallestMaxSize", {"max_size": 30}, A.SmallestMaxSize(30), n=1, boxes=True),
        Case("CenterCrop", {"height": 12, "width": 15}, A.CenterCrop(12, 15), n=1, boxes=True),
        Case(
            "Crop",
            {"x_min": 2, "y_min": 3, "x_max": 20, "y_max": 17},
            A.Crop(2, 3, 20, 17),
            n=1,
            boxes=True,
        ),
        *[
            Case(
                "PadIfNeeded",
                {
                    "min_height": 31,
                    "min_width": 40,
                    "border_mode": b,
                    "value": [5, 6, 7],
                    "mask_value": 9,
                },
                A.PadIfNeeded(31, 40, border_mode=b, value=[5, 6, 7], mask_value=9),
                n=1,
                boxes=True,
            )
            for b in range(5)
        ],
        Case(
            "PadIfNeeded",
            {
                "min_height": None,
                "min_width": None,
                "pad_height_divisor": 8,
                "pad_width_divisor": 16,
                "position": "top_left",
            },
            A.PadIfNeeded(
                None, None, pad_height_divisor=8, pad_width_divisor=16, position="top_left"
            ),
            n=1,
            boxes=True,
        ),
        Case(
            "RandomCrop",
            {"height": 15, "width": 20},
            A.RandomCrop(15, 20),
            _positions(H, W, 15, 20),
            n=16,
            every_choice=False,
            boxes=True,
        ),
        Case(
            "RandomResizedCrop",
            {"height": 12, "width": 14, "scale": [0.5, 0.5], "ratio": [1.0, 1.0]},
            rrc,
            [{"crop_height": 17, "crop_width": 17, **p} for p in _positions(H, W, 17, 17)],
            n=16,
            every_choice=False,
            boxes=True,
        ),
        Case(
            "RandomSizedCrop",
            {"min_max_height": [10, 10], "height": 12, "width": 14, "w2h_ratio": 1.5},
            sized,
            [{"crop_height": 10, "crop_width": 15, **p} for p in _positions(H, W, 10, 15)],
            n=16,
            every_choice=False,
            boxes=True,
        ),
        Case(
            "RandomSizedCrop",
            {
                "min_max_height": [10, 10],
                "height": 12,
                "width": 14,
                "w2h_ratio": 1.5,
                "interpolation": 0,
            },
            A.RandomSizedCrop((10, 10), 12, 14, w2h_ratio=1.5, interpolation=0, p=1),
            [{"crop_height": 10, "crop_width": 15, **p} for p in _positions(H, W, 10, 15)],
            n=16,
            every_choice=False,
            variant="interpolation: 0",
        ),
    ]


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name}-{CASES.index(c)}")
def test_okc_matches_albumentations(case: Case) -> None:
    compare(case)


def test_cv2_copy_make_border_and_remap_are_okc_borders() -> None:
    """The primitives the warps share, against cv2 directly: every border mode, exact."""
    from okc.data import borders

    image = torch.from_numpy(IMAGE).permute(2, 0, 1).float()
    fill = torch.tensor([5.0, 6.0, 7.0]).view(3, 1, 1)
    for border in range(5):
        out = borders.pad(image, 31, 3, 40, 2, border=border, fill=fill)
        expected = cv2.copyMakeBorder(IMAGE, 31, 3, 40, 2, border, value=(5, 6, 7))
        assert np.array_equal(out.permute(1, 2, 0).numpy(), expected), border
