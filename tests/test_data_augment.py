"""Augmentations from config: both parameter styles, per-sample containers, masks that follow."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from okc.config.schema import Augmentation
from okc.data.augment import build_ops, split_transform
from okc.data.ops import Chain
from okc.errors import OkcError


def chain(*entries: tuple[str, dict[str, Any]]) -> nn.Module:
    return Chain(build_ops([Augmentation(n, p) for n, p in entries]))


def labelled_batch(batch: int = 16, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose first channel *is* the mask (scaled): alignment is checkable exactly."""
    gen = torch.Generator().manual_seed(0)
    mask = torch.randint(0, 5, (batch, 1, size, size), generator=gen).float()
    image = torch.cat([mask / 4, torch.rand(batch, 2, size, size, generator=gen)], dim=1)
    return image, mask


GEOMETRIC = [
    ("HorizontalFlip", {"p": 0.5}),
    ("VerticalFlip", {"p": 0.5}),
    ("Flip", {"p": 0.8}),
    ("RandomRotate90", {"p": 0.7}),
    ("Transpose", {"p": 0.5}),
    ("RandomCrop", {"height": 8, "width": 10}),
    ("RandomCrop", {"size": [12, 12], "padding": 3}),
    ("CenterCrop", {"height": 6, "width": 6}),
    ("OneOf", {"p": 0.9, "transforms": [{"name": "HorizontalFlip"}, {"name": "VerticalFlip"}]}),
    ("RandomVerticalFlip", {"p": 0.5}),  # Kornia's own name
]


@pytest.mark.parametrize(("name", "params"), GEOMETRIC, ids=[g[0] for g in GEOMETRIC])
def test_masks_follow_geometric_ops(name: str, params: dict[str, Any]) -> None:
    torch.manual_seed(1)
    image, mask = labelled_batch()
    out_image, (out_mask,) = chain((name, params))(image, [mask])
    assert out_image.shape[-2:] == out_mask.shape[-2:]
    assert torch.equal(out_image[:, :1] * 4, out_mask)
    moved = not torch.equal(out_mask, mask) if out_mask.shape == mask.shape else True
    assert moved


def test_masks_ignore_photometric_ops() -> None:
    image, mask = labelled_batch()
    op = chain(
        ("ColorJitter", {"p": 1.0}), ("GaussNoise", {"p": 1.0}), ("HorizontalFlip", {"p": 1.0})
    )
    out_image, (out_mask,) = op(image, [mask])
    assert torch.equal(out_mask, mask.flip(-1))
    assert not torch.allclose(out_image, image.flip(-1))


def test_resize_masks_stay_labels() -> None:
    image, mask = labelled_batch(size=9)
    out_image, (out_mask,) = chain(("Resize", {"height": 20, "width": 14}))(image, [mask])
    assert out_image.shape == (16, 3, 20, 14) and out_mask.shape == (16, 1, 20, 14)
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}


def test_one_of_chooses_per_sample() -> None:
    torch.manual_seed(0)
    image = torch.rand(64, 3, 6, 6)
    op = chain(
        ("OneOf", {"p": 1.0, "transforms": [{"name": "HorizontalFlip"}, {"name": "VerticalFlip"}]})
    )
    out, _ = op(image, [])
    h = [torch.equal(o, i.flip(-1)) for o, i in zip(out, image, strict=True)]
    v = [torch.equal(o, i.flip(-2)) for o, i in zip(out, image, strict=True)]
    assert all(a != b for a, b in zip(h, v, strict=True))  # each sample: exactly one of them
    assert 10 < sum(h) < 54  # and both are used within one batch


def test_probability_zero_and_one() -> None:
    image = torch.rand(8, 3, 5, 5)
    assert torch.equal(chain(("HorizontalFlip", {"p": 0.0}))(image, [])[0], image)
    assert torch.equal(chain(("HorizontalFlip", {"p": 1.0}))(image, [])[0], image.flip(-1))
    assert torch.equal(
        chain(("HorizontalFlip", {"always_apply": True, "p": 0.0}))(image, [])[0], image.flip(-1)
    )


@pytest.mark.parametrize(
    ("name", "styles"),
    [
        ("RandomCrop", [{"height": 4, "width": 6}, {"size": [4, 6]}]),
        (
            "Resize",
            [{"height": 4, "width": 6}, {"size": [4, 6]}, {"size": [4, 6], "resample": "nearest"}],
        ),
        ("CenterCrop", [{"height": 4, "width": 6}, {"size": [4, 6]}]),
        ("RandomResizedCrop", [{"height": 4, "width": 6}, {"size": [4, 6], "scale": [0.5, 1.0]}]),
        ("RandomBrightness", [{"limit": 0.2}, {"brightness": [0.8, 1.2]}]),
        ("RandomGamma", [{"gamma_limit": [80, 120]}, {"gamma": [0.8, 1.2]}]),
    ],
)
def test_both_parameter_styles(name: str, styles: list[dict[str, Any]]) -> None:
    image = torch.rand(4, 3, 10, 10)
    shapes = {chain((name, params))(image, [])[0].shape for params in styles}
    assert len(shapes) == 1


def test_resize_with_one_size_keeps_the_aspect() -> None:
    image = torch.rand(2, 3, 10, 20)
    assert chain(("Resize", {"size": 5}))(image, [])[0].shape == (2, 3, 5, 10)
    assert chain(("Resize", {"size": 5, "side": "long"}))(image, [])[0].shape == (2, 3, 2, 5)
    assert chain(("LongestMaxSize", {"max_size": 10}))(image, [])[0].shape == (2, 3, 5, 10)


def test_normalize_matches_albumentations() -> None:
    pixels = torch.randint(0, 256, (2, 3, 4, 4)).float()
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.3, 0.4]
    out, _ = chain(("Normalize", {"mean": mean, "std": std}))(pixels / 255, [])
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(out, (pixels - m * 255) / (s * 255))


def test_torchok_example_augment_builds_and_runs() -> None:
    op = chain(
        ("HorizontalFlip", {}),
        ("VerticalFlip", {}),
        ("OneOf", {"transforms": [{"name": "JpegCompression"}, {"name": "GaussNoise"}]}),
        ("ColorJitter", {"p": 0.2}),
        ("ShiftScaleRotate", {}),
        ("RandomBrightnessContrast", {}),
        ("CoarseDropout", {"max_holes": 2, "max_height": 3, "max_width": 3, "p": 1.0}),
        ("Compose", {"p": 0.5, "transforms": [{"name": "Blur", "params": {"blur_limit": 3}}]}),
    )
    out, _ = op(torch.rand(8, 3, 16, 16), [])
    assert out.shape == (8, 3, 16, 16) and out.min() >= 0 and out.max() <= 1


def test_split_transform_puts_size_ops_per_sample() -> None:
    built = build_ops(
        [
            Augmentation("Resize", {"height": 8, "width": 8}),
            Augmentation("Normalize", {}),
            Augmentation("ToTensorV2"),
        ],
    )
    per_sample, batched = split_transform(built)
    assert [type(op).__name__ for op in per_sample] == ["Resize"]
    assert [type(op).__name__ for op in batched] == ["Normalize"]
    image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    mask = torch.randint(0, 3, (1, 5, 7))
    out, (out_mask,) = per_sample[0](image, [mask])
    assert out.dtype == torch.uint8 and out.shape == (3, 8, 8)
    assert out_mask.dtype == torch.int64 and out_mask.shape == (1, 8, 8)


def test_bad_entries_name_the_key_path() -> None:
    with pytest.raises(
        OkcError,
        match=r"^0.name: unknown augmentation 'HorizntalFlip', did you mean 'HorizontalFlip'",
    ):
        chain(("HorizntalFlip", {}))
    with pytest.raises(
        OkcError,
        match=r"^0.params.heigth: RandomCrop has no parameter 'heigth', did you mean 'height'",
    ):
        chain(("RandomCrop", {"heigth": 3, "width": 3}))
    with pytest.raises(OkcError, match=r"^0.params.transforms.1.params.q: .*no parameter 'q'"):
        chain(
            (
                "OneOf",
                {
                    "transforms": [
                        {"name": "HorizontalFlip"},
                        {"name": "GaussNoise", "params": {"q": 1}},
                    ]
                },
            )
        )
    with pytest.raises(OkcError, match=r"^0.params: RandomCrop: set height and width"):
        chain(("RandomCrop", {}))
    with pytest.raises(OkcError, match=r"^0.params.p: expected float"):
        chain(("HorizontalFlip", {"p": "often"}))


def test_the_augmentation_contract_fails_an_identity_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default contract check (tests/contracts/runners.py) refuses an op that changes
    nothing, so a case cannot pass by building an op that never applies; a real op passes."""
    from contracts.runners import Case, check_augmentation

    from okc.data.ops import Identity
    from okc.registry import AUGMENTATIONS

    def PassThrough(*, p: float = 0.5) -> nn.Module:
        return Identity()

    monkeypatch.setitem(AUGMENTATIONS._entries, "PassThrough", PassThrough)
    with pytest.raises(AssertionError, match="PassThrough .* left the image unchanged"):
        check_augmentation("PassThrough", Case(params={"p": 1.0}))
    with pytest.raises(AssertionError, match="left the image unchanged"):
        check_augmentation("HorizontalFlip", Case(params={"p": 0.0}))  # never applied
    check_augmentation("HorizontalFlip", Case(params={"p": 1.0}))
