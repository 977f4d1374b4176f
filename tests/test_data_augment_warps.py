"""albumentations' warps and the ops okc added for TorchOk's configs: exact geometry on hand-made
cases, masks aligned with the pixels (also through the pipeline), boxes that follow, and size
ops in ``augment`` that run per sample so images of different sizes batch."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from okc.config.schema import Augmentation, DataItem, DataLoader, Dataset, Phase
from okc.data import build_pipeline
from okc.data.augment import build_ops, split_augment
from okc.data.ops import Boxes, Chain, OneSample
from okc.data.pipeline import setting_warnings
from okc.errors import ConfigError


def chain(*entries: tuple[str, dict[str, Any]]) -> nn.Module:
    return Chain(build_ops([Augmentation(n, p) for n, p in entries]))


def labelled_batch(batch: int = 8, height: int = 14, width: int = 18) -> tuple:
    """Images whose first channel *is* the mask (scaled), so alignment is checkable exactly."""
    gen = torch.Generator().manual_seed(0)
    mask = torch.randint(0, 5, (batch, 1, height, width), generator=gen).float()
    image = torch.cat([mask / 4, torch.rand(batch, 2, height, width, generator=gen)], dim=1)
    return image, mask


NEAREST = {"p": 1.0, "interpolation": 0}
WARPS = [
    ("GridDistortion", {**NEAREST, "distort_limit": 0.5}),
    ("GridDistortion", {**NEAREST, "num_steps": 3, "normalized": True, "border_mode": 0}),
    ("OpticalDistortion", {**NEAREST, "distort_limit": 0.8, "shift_limit": 2, "border_mode": 3}),
    ("ElasticTransform", {**NEAREST, "alpha": 40, "sigma": 3, "border_mode": 1}),
    ("ElasticTransform", {**NEAREST, "approximate": True, "same_dxdy": True, "border_mode": 2}),
    ("ShiftScaleRotate", {**NEAREST, "border_mode": 0}),
    ("Rotate", {**NEAREST, "limit": 60}),
    ("SafeRotate", {**NEAREST, "border_mode": 3}),
    ("Affine", {**NEAREST, "shear": 20, "mode": 4}),
    ("Perspective", {**NEAREST, "scale": [0.1, 0.3], "fit_output": True}),
    ("RandomSizedCrop", {"interpolation": 0, "min_max_height": [6, 12], "height": 10,
                         "width": 10, "w2h_ratio": 1.2}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "params"), WARPS, ids=[w[0] for w in WARPS])
def test_masks_follow_the_warps_and_keep_their_labels(name: str, params: dict) -> None:
    torch.manual_seed(0)
    image, mask = labelled_batch()
    out, (out_mask,) = chain((name, params))(image, [mask])
    assert out.shape[-2:] == out_mask.shape[-2:]
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    torch.testing.assert_close(out[:, :1] * 4, out_mask)  # same pixels moved the same way
    assert not torch.equal(out, image) if out.shape == image.shape else True


def test_fixed_rotation_by_a_quarter_turn_is_rot90() -> None:
    """cv2's rotation matrix about ((w - 1) / 2, (h - 1) / 2): 90 degrees on a square image is an
    exact quarter turn, counter-clockwise, with no border."""
    image = torch.rand(2, 3, 9, 9)
    out, _ = chain(("Rotate", {"limit": [90, 90], "p": 1.0, "border_mode": 0}))(image, [])
    torch.testing.assert_close(out, torch.rot90(image, 1, (2, 3)), atol=1e-5, rtol=0)


def test_shift_with_each_border_mode() -> None:
    """A shift of exactly 3 pixels left shows cv2's border modes on the right edge."""
    row = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 2, 8) / 10
    expected = {
        0: [3, 4, 5, 6, 7, 5, 5, 5],  # constant value 127.5 / 255 = 0.5
        1: [3, 4, 5, 6, 7, 7, 7, 7],  # replicate
        2: [3, 4, 5, 6, 7, 7, 6, 5],  # reflect
        3: [3, 4, 5, 6, 7, 0, 1, 2],  # wrap
        4: [3, 4, 5, 6, 7, 6, 5, 4],  # reflect-101
    }
    for mode, values in expected.items():
        op = chain(("ShiftScaleRotate", {
            "shift_limit_x": [-3 / 8, -3 / 8], "shift_limit_y": 0, "scale_limit": 0,
            "rotate_limit": 0, "border_mode": mode, "value": 127.5, "p": 1.0}))  # fmt: skip
        out, _ = op(row, [])
        torch.testing.assert_close(out[0, 0, 0] * 10, torch.tensor(values, dtype=torch.float32))


def test_neutral_settings_are_the_identity() -> None:
    image, mask = labelled_batch(4)
    for name, params in [
        ("GridDistortion", {"distort_limit": 0}),
        ("OpticalDistortion", {"distort_limit": 0, "shift_limit": 0}),
        ("ElasticTransform", {"alpha": 0, "alpha_affine": 0}),
        ("Affine", {"scale": 1.0}),
    ]:
        out, (out_mask,) = chain((name, {**params, "p": 1.0}))(image, [mask])
        torch.testing.assert_close(out, image, atol=1e-5, rtol=0)
        assert torch.equal(out_mask, mask), name


def test_grid_distortion_stretches_strips() -> None:
    """Every strip 1.5x longer: the map reads x * 1.5 inside the image."""
    image = torch.arange(20.0).view(1, 1, 1, 20).expand(1, 1, 4, 20) / 100
    op = chain(("GridDistortion", {"num_steps": 4, "distort_limit": [0.5, 0.5],
                                   "border_mode": 0, "p": 1.0}))  # fmt: skip
    out, _ = op(image, [])
    torch.testing.assert_close(out[0, 0, 0, :13] * 100, torch.arange(13.0) * 1.5, atol=1e-4, rtol=0)


def test_fancy_pca_moves_colours_along_the_principal_axis() -> None:
    """Pixels on a line in RGB space: one principal component, so the shift is along it."""
    torch.manual_seed(0)
    t = torch.rand(1, 1, 12, 12) * 0.4 + 0.3
    direction = torch.tensor([0.6, 0.0, 0.8]).view(1, 3, 1, 1)
    image = 0.5 + (t - 0.5) * direction
    out, _ = chain(("FancyPCA", {"alpha": 1.0, "p": 1.0}))(image, [])
    shift = (out - image)[0, :, 0, 0]
    assert shift.norm() > 0 and torch.allclose(out - image, shift.view(1, 3, 1, 1), atol=1e-6)
    torch.testing.assert_close(shift / shift.norm(), torch.tensor([0.6, 0.0, 0.8]) * shift[0].sign(),
                               atol=1e-4, rtol=0)  # fmt: skip


def test_free_form_warps_move_boxes_around_what_is_left_of_them() -> None:
    image = torch.rand(4, 3, 24, 24)
    mask = torch.zeros(4, 1, 24, 24)
    mask[:, :, 6:14, 4:16] = 1
    boxes = Boxes([torch.tensor([[4.0, 6.0, 16.0, 14.0]])] * 4, [torch.tensor([1])] * 4)
    for name, params in WARPS[:5]:
        torch.manual_seed(0)
        params = {**params, "border_mode": 0}  # nothing mirrored into view
        _, (out_mask,), out = chain((name, params))(image, [mask], boxes)
        for i in range(4):
            ys, xs = (out_mask[i, 0] == 1).nonzero(as_tuple=True)
            if not len(xs):  # warped out of view: dropped with its label
                assert not len(out.boxes[i]) and not len(out.labels[i]), name
                continue
            tight = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            torch.testing.assert_close(out.boxes[i], tight[None], msg=name)


# --- through the pipeline -----------------------------------------------------------------------


def _images_csv(folder: Path, sizes: list[tuple[int, int]], *, masks: bool = False) -> str:
    rows = ["image_path,mask_path" if masks else "image_path,label"]
    rng = np.random.default_rng(0)
    for i, size in enumerate(sizes):
        labels = rng.integers(0, 5, size).astype(np.uint8)
        pixels = rng.integers(0, 256, (*size, 3)).astype(np.uint8)
        if masks:
            pixels[..., 0] = labels * 50  # the mask, visible in the image
            Image.fromarray(labels).save(folder / f"{i}_mask.png")
        Image.fromarray(pixels).save(folder / f"{i}.png")
        rows.append(f"{i}.png,{i}_mask.png" if masks else f"{i}.png,{i % 2}")
    (folder / "data.csv").write_text("\n".join(rows))
    return "data.csv"


def _pipeline(dataset: Dataset, phase: Phase = Phase.TRAIN, batch: int = 4) -> Any:
    item = DataItem(dataset, DataLoader(batch_size=batch, num_workers=2))
    return build_pipeline(item, phase=phase)


def test_imagenet_augment_resizes_images_of_two_sizes_per_sample(tmp_path: Path) -> None:
    """TorchOk's classification_imagenet.yaml: Resize first in augment, then FancyPCA, a flip and
    a random crop; the images on disk have two sizes."""
    annotations = _images_csv(tmp_path, [(20, 30), (26, 18)] * 3)
    augment = (
        Augmentation("Resize", {"height": 16, "width": 16}),
        Augmentation("FancyPCA", {"alpha": 0.1, "p": 0.5}),
        Augmentation("HorizontalFlip", {"p": 0.5}),
        Augmentation("RandomCrop", {"p": 1, "height": 12, "width": 12}),
    )
    transform = (Augmentation("Normalize", {}), Augmentation("ToTensorV2"))
    dataset = Dataset(
        "ImageClassificationDataset",
        {"data_folder": str(tmp_path), "annotation_path": annotations},
        transform=transform,
        augment=augment,
    )
    pipeline = _pipeline(dataset)
    # on a CPU device the tail runs in the loader threads too, per sample in uint8 (sample_ops)
    assert [type(op).__name__ for op in pipeline._reader.per_sample] == [
        "OneSample", "SampleFancyPCA", "SampleFlip", "SampleCrop",
    ]  # fmt: skip
    assert pipeline.augment is None and pipeline.transform is None
    batch = next(iter(pipeline))
    assert batch["image"].shape == (4, 3, 12, 12) and batch["image"].dtype == torch.float32
    assert pipeline.to_device(batch)["image"].shape == (4, 3, 12, 12)
    # augment is TRAIN-only: in VALID the images keep their sizes and do not batch (okc warns)
    assert "TRAIN only" in str(setting_warnings(DataItem(dataset), Phase.VALID))
    valid = _pipeline(dataset, Phase.VALID)
    with pytest.raises(Exception, match="cannot batch 'image'"):
        next(iter(valid))


def test_random_ops_before_a_size_op_run_first_on_each_sample(tmp_path: Path) -> None:
    """``[HorizontalFlip, RandomCrop, Resize]`` on two sizes: the flip and the crop see the
    original image (per sample), the resize their output, in the file's order."""
    annotations = _images_csv(tmp_path, [(20, 30), (26, 18)] * 2)
    augment = (
        Augmentation("HorizontalFlip", {"p": 1.0}),
        Augmentation("RandomCrop", {"height": 14, "width": 14}),
        Augmentation("Resize", {"height": 7, "width": 7, "interpolation": 0}),
        Augmentation("VerticalFlip", {"p": 1.0}),
    )
    dataset = Dataset(
        "ImageClassificationDataset",
        {"data_folder": str(tmp_path), "annotation_path": annotations},
        augment=augment,
    )
    pipeline = _pipeline(dataset)
    stages = [op.op for op in pipeline._reader.per_sample]  # the flip and crop share a stage
    assert [type(op).__name__ for op in stages] == ["Chain", "Resize"]
    assert [type(op).__name__ for op in stages[0].ops] == ["KorniaOps"]  # flip (p=1) and crop
    batch = next(iter(pipeline))
    assert batch["image"].shape == (4, 3, 7, 7)
    out = pipeline.to_device(batch)["image"]
    assert torch.equal(out, batch["image"].float().div(255).flip(-2))  # only the tail batched


def test_size_ops_in_random_containers_run_per_sample() -> None:
    built = build_ops(
        [
            Augmentation("HorizontalFlip"),
            Augmentation("Compose", {"p": 0.5, "transforms": [
                {"name": "PadIfNeeded", "params": {"min_height": 8, "min_width": 8}},
                {"name": "CenterCrop", "params": {"height": 8, "width": 8}}]}),
            Augmentation("GridDistortion"),
        ],
    )  # fmt: skip
    per_sample, batched = split_augment(built)
    assert len(per_sample) == 1 and isinstance(per_sample[0], OneSample)  # one float trip
    assert [type(op).__name__ for op in per_sample[0].op.ops] == ["RandomFlip", "Compose"]
    assert [type(op).__name__ for op in batched] == ["GridDistortion"]
    torch.manual_seed(0)
    sizes = set()
    for _ in range(20):  # a uint8 (C,H,W) sample with its int64 mask, as the loader holds them
        image = torch.randint(0, 255, (3, 5, 11), dtype=torch.uint8)
        mask = torch.randint(0, 3, (1, 5, 11))
        for op in per_sample:
            image, (mask,) = op(image, [mask])
        assert image.dtype == torch.uint8 and mask.dtype == torch.int64
        sizes.add(tuple(image.shape))
    assert sizes == {(3, 5, 11), (3, 8, 8)}  # p=0.5: both outcomes


def test_normalize_before_a_size_op_in_augment_is_refused(tmp_path: Path) -> None:
    annotations = _images_csv(tmp_path, [(8, 8)] * 2)
    augment = (Augmentation("Normalize", {}), Augmentation("Resize", {"height": 4, "width": 4}))
    dataset = Dataset(
        "ImageClassificationDataset",
        {"data_folder": str(tmp_path), "annotation_path": annotations},
        augment=augment,
    )
    with pytest.raises(ConfigError, match=r"augment.0.name: Normalize before augment's last"):
        _pipeline(dataset)


def test_segmentation_masks_stay_aligned_through_the_pipeline(tmp_path: Path) -> None:
    """TorchOk's segmentation augment (flips, a random pad-and-crop, OneOf of elastic, grid and
    optical warps) on images of different sizes: the mask, drawn into the image's red channel,
    must come out where the image's pixels went."""
    annotations = _images_csv(tmp_path, [(20, 26), (30, 24), (24, 24), (18, 30)], masks=True)
    warp = {"interpolation": 0, "p": 1.0}
    augment = (
        Augmentation("HorizontalFlip"),
        Augmentation("VerticalFlip"),
        Augmentation("Compose", {"p": 0.5, "transforms": [
            {"name": "PadIfNeeded", "params": {"min_height": 24, "min_width": 24}},
            {"name": "CenterCrop", "params": {"height": 24, "width": 24}}]}),
        Augmentation("OneOf", {"p": 1.0, "transforms": [
            {"name": "ElasticTransform", "params": {**warp, "border_mode": 1, "alpha": 30,
                                                    "sigma": 3}},
            {"name": "GridDistortion", "params": warp},
            {"name": "OpticalDistortion", "params": {**warp, "distort_limit": 0.5}}]}),
    )  # fmt: skip
    transform = (Augmentation("Resize", {"height": 16, "width": 16, "interpolation": 0}),)
    dataset = Dataset(
        "ImageSegmentationDataset",
        {"data_folder": str(tmp_path), "annotation_path": annotations},
        transform=transform,
        augment=augment,
    )
    pipeline = _pipeline(dataset)
    torch.manual_seed(0)
    for _ in range(3):
        for batch in pipeline:
            out = pipeline.to_device(batch)
            assert out["image"].shape == (4, 3, 16, 16) and out["mask"].shape == (4, 16, 16)
            torch.testing.assert_close(out["image"][:, 0] * 255 / 50, out["mask"].float())


def test_per_sample_random_ops_are_safe_in_loader_threads() -> None:
    """Kornia's modules keep their last call's parameters on themselves: loader threads each
    get their own copy (sharing one mixed samples up and failed inside Kornia)."""
    built = build_ops(
        [Augmentation("HorizontalFlip"), Augmentation("VerticalFlip"),
         Augmentation("Resize", {"height": 8, "width": 8})],
    )  # fmt: skip
    per_sample, _ = split_augment(built)
    errors: list[str] = []

    def work() -> None:
        try:
            for _ in range(60):
                image, mask = torch.randint(0, 255, (3, 10, 12), dtype=torch.uint8), torch.zeros(
                    1, 10, 12, dtype=torch.int64)  # fmt: skip
                mask[:, :5, :6] = 1
                for op in per_sample:
                    image, (mask,) = op(image, [mask])
                assert image.shape == (3, 8, 8) and mask.sum() == 16
        except Exception as err:
            errors.append(repr(err))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]


def test_per_sample_draws_repeat_by_seed_epoch_and_index(tmp_path: Path) -> None:
    """Random ops in the loader threads draw from the sample's own stream: an epoch reads the
    same twice (whatever the threads' timing), another epoch differs, and the training loop's
    global generator is left alone."""
    annotations = _images_csv(tmp_path, [(20, 30), (26, 18), (17, 17), (30, 22)] * 2)
    augment = (
        Augmentation("HorizontalFlip"),
        Augmentation("OneOf", {"p": 1.0, "transforms": [
            {"name": "Rotate", "params": {"limit": 40}}, {"name": "GridDistortion"}]}),
        Augmentation("Compose", {"p": 0.5, "transforms": [
            {"name": "PadIfNeeded", "params": {"min_height": 26, "min_width": 26}},
            {"name": "CenterCrop", "params": {"height": 20, "width": 20}}]}),
        Augmentation("Resize", {"height": 10, "width": 10}),
    )  # fmt: skip
    dataset = Dataset(
        "ImageClassificationDataset",
        {"data_folder": str(tmp_path), "annotation_path": annotations},
        augment=augment,
    )
    pipeline = _pipeline(dataset)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = torch.cat([b["image"] for b in pipeline])
    assert torch.equal(torch.get_rng_state(), state)
    again = torch.cat([b["image"] for b in pipeline])
    pipeline.set_epoch(1)
    other = torch.cat([b["image"] for b in pipeline])
    assert torch.equal(first, again) and not torch.equal(first, other)
