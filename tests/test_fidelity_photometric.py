"""Fidelity: okc's albumentations-named colour, noise, blur, dropout, normalization ops and
containers against albumentations 1.3.0 on the same image (see fidelity.py and the table in
docs/data.md). Magnitudes are fixed (``limit: [a, a]``, each sign); discrete choices (channel
orders, dropped channels, hole positions, motion kernels, a container's pick) are enumerated
and okc's samples must each match one of them."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch
from fidelity import IMAGE, SMOOTH, A, Case, albumentations_run, compare, cv2

from okc.data import rng

H, W = IMAGE.shape[:2]


def _signed() -> list[Case]:
    cases = []
    for s in (-1, 1):
        cases += [
            Case("RandomBrightnessContrast", {"brightness_limit": [0.2 * s] * 2,
                                              "contrast_limit": [0.3 * s] * 2, "p": 1.0},
                 A.RandomBrightnessContrast((0.2 * s,) * 2, (0.3 * s,) * 2, p=1), n=2),
            Case("RandomBrightnessContrast", {"brightness_limit": [0.1 * s] * 2,
                                              "contrast_limit": [-0.2 * s] * 2,
                                              "brightness_by_max": False, "p": 1.0},
                 A.RandomBrightnessContrast((0.1 * s,) * 2, (-0.2 * s,) * 2,
                                            brightness_by_max=False, p=1), n=2),
            Case("RandomBrightness", {"limit": [0.2 * s] * 2, "p": 1.0},
                 A.RandomBrightness((0.2 * s,) * 2, p=1), n=2),
            Case("RandomContrast", {"limit": [0.3 * s] * 2, "p": 1.0},
                 A.RandomContrast((0.3 * s,) * 2, p=1), n=2),
            Case("HueSaturationValue", {"hue_shift_limit": [15 * s] * 2,
                                        "sat_shift_limit": [25 * s] * 2,
                                        "val_shift_limit": [-20 * s] * 2, "p": 1.0},
                 A.HueSaturationValue((15 * s,) * 2, (25 * s,) * 2, (-20 * s,) * 2, p=1), n=2),
            Case("RGBShift", {"r_shift_limit": [20 * s] * 2, "g_shift_limit": [-10 * s] * 2,
                              "b_shift_limit": [5 * s] * 2, "p": 1.0},
                 A.RGBShift((20 * s,) * 2, (-10 * s,) * 2, (5 * s,) * 2, p=1), n=2),
            Case("RandomGamma", {"gamma_limit": [100 + 30 * s] * 2, "p": 1.0},
                 A.RandomGamma((100 + 30 * s,) * 2, p=1), n=2),
            Case("GaussNoise", {"var_limit": [0, 0], "mean": 20 * s, "p": 1.0},
                 A.GaussNoise((0, 0), mean=20 * s, p=1), n=2),
            Case("MultiplicativeNoise", {"multiplier": [1 + 0.2 * s] * 2, "p": 1.0},
                 A.MultiplicativeNoise((1 + 0.2 * s,) * 2, p=1), n=2),
            Case("ColorJitter", {"brightness": [1 + 0.2 * s] * 2, "contrast": [1 + 0.2 * s] * 2,
                                 "saturation": [1 + 0.3 * s] * 2, "hue": [0.05 * s] * 2,
                                 "p": 1.0},
                 A.ColorJitter((1 + 0.2 * s,) * 2, (1 + 0.2 * s,) * 2, (1 + 0.3 * s,) * 2,
                               (0.05 * s,) * 2, p=1),
                 [{"order": list(o)} for o in itertools.permutations(range(4))], n=8,
                 every_choice=False),
        ]  # fmt: skip
    return cases


def _motion_kernels(size: int, *, points: bool = False) -> list[dict[str, Any]]:
    """Every line kernel albumentations' MotionBlur can draw at ``size``: lines between two
    grid points (and single points, which its centring makes of some lines when not
    ``allow_shifted``)."""
    kernels: dict[bytes, np.ndarray] = {}
    for x1, y1, x2, y2 in itertools.product(range(size), repeat=4):
        if (x1, y1) == (x2, y2) and not points:
            continue
        kernel = np.zeros((size, size), np.uint8)
        cv2.line(kernel, (x1, y1), (x2, y2), 1, thickness=1)
        kernels[kernel.tobytes()] = kernel.astype(np.float32) / kernel.sum()
    return [{"kernel": k} for k in kernels.values()]


def _holes(height: int, width: int, hole_h: int, hole_w: int) -> list[dict[str, Any]]:
    return [
        {"holes": [(x, y, x + hole_w, y + hole_h)]}
        for y in range(height - hole_h + 1)
        for x in range(width - hole_w + 1)
    ]


def _cutout_holes(size: int) -> list[dict[str, Any]]:
    """albumentations' Cutout: a hole centred anywhere, clipped to the image."""
    holes = []
    for y, x in itertools.product(range(H + 1), range(W + 1)):
        y1, x1 = np.clip(y - size // 2, 0, H), np.clip(x - size // 2, 0, W)
        holes.append({"holes": [(x1, y1, min(x1 + size, W), min(y1 + size, H))]})
    return holes


def _fancy_pca_reference(alpha: float, n: int) -> Any:
    """albumentations' FancyPCA with okc's draws: okc draws (per sample) apply?, then one
    N(0, 1) factor scaled by alpha, from the seeded torch stream."""

    def reference(image: np.ndarray, mask: np.ndarray, boxes: np.ndarray) -> list:
        torch.manual_seed(0)
        rng.rand(n, 1, 1, 1, device="cpu")
        factors = rng.randn(n, 1, device="cpu", dtype=torch.float64)[:, 0] * alpha
        transform = A.FancyPCA(alpha, p=1)
        return [albumentations_run(transform, {"alpha": float(a)}, image, mask, boxes)
                for a in factors]  # fmt: skip

    return reference


def _container_reference(*choices: list[Any]) -> Any:
    """The outputs of each way a container can go: each a list of albumentations transforms
    applied in order."""

    def reference(image: np.ndarray, mask: np.ndarray, boxes: np.ndarray) -> list:
        outputs = []
        for chain in choices:
            out = (image, mask, boxes)
            for transform in chain:
                out = albumentations_run(transform, {}, out[0], out[1], out[2])
            outputs.append(out)
        return outputs

    return reference


_FLIP = {"name": "HorizontalFlip", "params": {"p": 1.0}}
_GRAY = {"name": "ToGray", "params": {"p": 1.0}}
_HF, _TG = A.HorizontalFlip(p=1), A.ToGray(p=1)


def _cases() -> list[Case]:
    return [
        *_signed(),
        Case("Normalize", {}, A.Normalize(), n=1, raw=True),
        Case("Normalize", {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.1],
                           "max_pixel_value": 200.0},
             A.Normalize((0.5, 0.4, 0.3), (0.2, 0.3, 0.1), 200.0), n=1, raw=True),
        Case("ToFloat", {"max_value": 100.0}, A.ToFloat(100.0), n=1, raw=True),
        Case("ToFloat", {}, A.ToFloat(), n=1, raw=True),
        Case("ToTensorV2", {}, reference=lambda i, m, b: [(i, m, b)], n=1),
        Case("NoOp", {"p": 1.0}, A.NoOp(p=1), n=1),
        Case("FancyPCA", {"alpha": 0.5, "p": 1.0}, n=4, reference=_fancy_pca_reference(0.5, 4),
             every_choice=False, image=SMOOTH),
        Case("ChannelShuffle", {"p": 1.0}, A.ChannelShuffle(p=1),
             [{"channels_shuffled": list(o)} for o in itertools.permutations(range(3))], n=48),
        Case("ChannelDropout", {"fill_value": 7, "p": 1.0}, A.ChannelDropout(fill_value=7, p=1),
             [{"channels_to_drop": (c,)} for c in range(3)], n=24),
        Case("ChannelDropout", {"channel_drop_range": [2, 2], "p": 1.0},
             A.ChannelDropout((2, 2), p=1),
             [{"channels_to_drop": c} for c in itertools.combinations(range(3), 2)], n=24),
        Case("ToGray", {"p": 1.0}, A.ToGray(p=1), n=1),
        Case("InvertImg", {"p": 1.0}, A.InvertImg(p=1), n=1),
        *[
            Case("Equalize", {"mode": mode, "by_channels": by, "p": 1.0},
                 A.Equalize(mode, by, p=1), n=1, variant="" if by else "by_channels: false")
            for mode in ("cv", "pil") for by in (True, False)
        ],
        Case("Posterize", {"num_bits": 3, "p": 1.0}, A.Posterize(3, p=1), n=1),
        Case("Posterize", {"num_bits": [[2, 2], [4, 4], [6, 6]], "p": 1.0},
             A.Posterize([(2, 2), (4, 4), (6, 6)], p=1), n=1),
        Case("Posterize", {"num_bits": [1, 0, 0], "p": 1.0}, A.Posterize([1, 0, 0], p=1),
             [{"num_bits": [b, 0, 0]} for b in (0, 1)], n=8),
        Case("Solarize", {"threshold": 100, "p": 1.0}, A.Solarize(100, p=1), n=1),
        Case("CLAHE", {"clip_limit": [2.0, 2.0], "tile_grid_size": [2, 2], "p": 1.0},
             A.CLAHE((2.0, 2.0), (2, 2), p=1), n=1, image=SMOOTH),
        Case("Sharpen", {"alpha": [0.4, 0.4], "lightness": [0.7, 0.7], "p": 1.0},
             A.Sharpen((0.4, 0.4), (0.7, 0.7), p=1), n=1),
        Case("ImageCompression", {"quality_lower": 50, "quality_upper": 50, "p": 1.0},
             A.ImageCompression(50, 50, p=1), n=1, image=SMOOTH),
        Case("JpegCompression", {"quality_lower": 90, "quality_upper": 90, "p": 1.0},
             A.JpegCompression(90, 90, p=1), n=1, image=SMOOTH),
        Case("Blur", {"blur_limit": [4, 4], "p": 1.0}, A.Blur((4, 4), p=1), n=1),
        Case("Blur", {"blur_limit": [3, 3], "p": 1.0}, A.Blur((3, 3), p=1), n=1),
        Case("GaussianBlur", {"blur_limit": [5, 5], "sigma_limit": [1.3, 1.3], "p": 1.0},
             A.GaussianBlur((5, 5), (1.3, 1.3), p=1), n=1),
        Case("GaussianBlur", {"blur_limit": [7, 7], "p": 1.0}, A.GaussianBlur((7, 7), p=1), n=1),
        Case("GaussianBlur", {"blur_limit": 0, "sigma_limit": [0.8, 0.8], "p": 1.0},
             A.GaussianBlur(0, (0.8, 0.8), p=1), n=1),
        Case("MedianBlur", {"blur_limit": [5, 5], "p": 1.0}, A.MedianBlur((5, 5), p=1), n=1),
        Case("MotionBlur", {"blur_limit": [3, 3], "p": 1.0}, A.MotionBlur((3, 3), p=1),
             _motion_kernels(3), n=16, every_choice=False),
        Case("MotionBlur", {"blur_limit": [5, 5], "p": 1.0}, A.MotionBlur((5, 5), p=1),
             _motion_kernels(5), n=24, every_choice=False),
        Case("MotionBlur", {"blur_limit": [5, 5], "allow_shifted": False, "p": 1.0},
             A.MotionBlur((5, 5), allow_shifted=False, p=1), _motion_kernels(5, points=True), n=24,
             every_choice=False),
        Case("CoarseDropout", {"max_holes": 1, "max_height": H, "max_width": 6,
                               "fill_value": 9, "mask_fill_value": 3, "p": 1.0},
             A.CoarseDropout(1, H, 6, fill_value=9, mask_fill_value=3, p=1),
             _holes(H, W, H, 6), n=16, every_choice=False),
        Case("Cutout", {"num_holes": 1, "max_h_size": 6, "max_w_size": 6, "fill_value": 9,
                        "p": 1.0},
             A.Cutout(1, 6, 6, fill_value=9, p=1), _cutout_holes(6), n=16, every_choice=False),
        Case("Compose", {"transforms": [_FLIP, _GRAY]}, reference=_container_reference([_HF, _TG]),
             n=2),
        Case("Sequential", {"transforms": [_FLIP, _GRAY], "p": 1.0},
             reference=_container_reference([_HF, _TG]), n=2),
        Case("OneOf", {"transforms": [_FLIP, _GRAY], "p": 1.0},
             reference=_container_reference([_HF], [_TG]), n=16),
        Case("SomeOf", {"transforms": [_FLIP, _GRAY, {"name": "InvertImg", "params": {}}],
                        "n": 2},
             reference=_container_reference([_HF, _TG], [_HF, A.InvertImg(p=1)],
                                             [_TG, A.InvertImg(p=1)]), n=24),
    ]  # fmt: skip


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name}-{CASES.index(c)}")
def test_okc_matches_albumentations(case: Case) -> None:
    compare(case)


def test_gauss_noise_has_albumentations_spread() -> None:
    """The noise itself (drawn by torch, not numpy, so not pixel-equal): its standard deviation
    is the square root of the drawn variance (0-255 units), as albumentations'."""
    image = np.full((64, 64, 3), 128, np.uint8)
    noise = A.GaussNoise((100, 100), p=1)(image=image)["image"].astype(np.float32) - 128
    torch.manual_seed(0)
    from okc.data.augment import build_ops
    from okc.data.ops import Chain

    op = Chain(build_ops([{"name": "GaussNoise", "params": {"var_limit": [100, 100], "p": 1}}]))  # fmt: skip
    out, _ = op(torch.full((1, 3, 64, 64), 128 / 255), [])
    ours = (out[0] * 255).round() - 128
    assert abs(float(ours.std()) - 10.0) < 0.5 and abs(float(noise.std()) - 10.0) < 0.5
    assert abs(float(ours.mean())) < 0.5


def test_every_albumentations_named_op_is_compared_and_in_the_table() -> None:
    """Each op okc registers under an albumentations name (or TorchOk's FitResize) has a
    comparison here, and the table has a row for each comparison and nothing else."""
    from fidelity import TABLE
    from test_fidelity_geometric import CASES as GEOMETRIC

    import okc.data.augment  # noqa: F401  (registers the names)
    from okc.registry import AUGMENTATIONS

    cases = {c.key for c in [*GEOMETRIC, *CASES]}
    names = {c.name for c in [*GEOMETRIC, *CASES]}
    assert set(AUGMENTATIONS.registered()) <= names, set(AUGMENTATIONS.registered()) - names
    assert cases == set(TABLE), cases ^ set(TABLE)
