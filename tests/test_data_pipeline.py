"""The pipeline: order, shuffle, drop_last, exact mid-epoch resume, sharding, corrupt samples."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from okc.config.schema import Augmentation, DataItem, DataLoader, Dataset, Phase
from okc.data import build_pipeline
from okc.data.pipeline import DataPipeline, setting_warnings
from okc.errors import ConfigError, OkcError, at, under


def shapes_item(num: int = 23, *, transform=(), augment=(), **loader: Any) -> DataItem:
    params = {"num_samples": num, "image_size": 8, "num_classes": 3}
    return DataItem(
        dataset=Dataset(name="Shapes", params=params, transform=transform, augment=augment),
        dataloader=DataLoader(**{"batch_size": 4, **loader}),
    )


def pipeline(item: DataItem, phase: Phase = Phase.TRAIN, **kwargs: Any) -> DataPipeline:
    """The pipeline of ``data.<PHASE>.0``, its warnings and errors placed as the loop places them."""
    key = f"data.{phase.name}.0"
    for warning in under(key, setting_warnings(item, phase)):
        warnings.warn(str(warning), stacklevel=2)
    with at(key):
        return build_pipeline(item, phase=phase, **kwargs)


def indices(batches) -> list[int]:
    return [i for b in batches for i in b["index"].tolist()]


def test_in_order_batches_and_len() -> None:
    p = pipeline(shapes_item(10, batch_size=4), Phase.VALID)
    batches = list(p)
    assert len(p) == 3 and [len(b["index"]) for b in batches] == [4, 4, 2]
    assert indices(batches) == list(range(10))
    batch = batches[0]
    assert batch["image"].shape == (4, 3, 8, 8) and batch["image"].dtype == torch.uint8
    assert batch["target"].shape == (4,)


def test_drop_last() -> None:
    p = pipeline(shapes_item(10, batch_size=4, drop_last=True))
    assert len(p) == 2 and indices(p) == list(range(8))


def test_shuffle_depends_on_seed_and_epoch() -> None:
    item = shapes_item(30, batch_size=5, shuffle=True)
    a, b, c = pipeline(item, seed=1), pipeline(item, seed=1), pipeline(item, seed=2)
    first = indices(a)
    assert sorted(first) == list(range(30)) and first != list(range(30))
    assert first == indices(b) and first != indices(c)
    a.set_epoch(1)
    second = indices(a)
    assert sorted(second) == list(range(30)) and second != first
    a.set_epoch(0)
    assert indices(a) == first


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("stop_after", [0, 1, 3, 6])
def test_resume_mid_epoch_is_exact(num_workers: int, stop_after: int) -> None:
    item = shapes_item(23, batch_size=4, shuffle=True, num_workers=num_workers)
    full = pipeline(item, seed=5)
    full.set_epoch(2)
    expected = indices(full)

    first = pipeline(item, seed=5)
    first.set_epoch(2)
    it = iter(first)
    before = [next(it) for _ in range(stop_after)]
    state = first.state_dict()

    resumed = pipeline(item, seed=5)  # a new process: nothing but the state carries over
    resumed.load_state_dict(state)
    resumed.set_epoch(2)
    after = list(resumed)
    assert indices(before) + indices(after) == expected
    resumed.set_epoch(3)  # the next epoch starts from its beginning
    assert len(indices(resumed)) == 23


def test_state_saved_at_the_end_resumes_to_nothing_and_next_epoch_is_whole() -> None:
    item = shapes_item(8, batch_size=4, shuffle=True)
    p = pipeline(item)
    list(p)
    state = p.state_dict()
    q = pipeline(item)
    q.load_state_dict(state)
    assert list(q) == []
    r = pipeline(item)
    r.load_state_dict(state)
    r.set_epoch(1)  # moving on: the saved position belonged to epoch 0
    assert sorted(indices(r)) == list(range(8))


def test_state_from_another_setup_is_refused() -> None:
    state = pipeline(shapes_item(8, batch_size=4)).state_dict()
    with pytest.raises(OkcError, match="batches per epoch"):
        pipeline(shapes_item(8, batch_size=2)).load_state_dict(state)


def test_two_ranks_cover_every_sample_once() -> None:
    item = shapes_item(11, batch_size=3, shuffle=True)
    ranks = [pipeline(item, Phase.VALID, seed=7, rank=r, world_size=2) for r in (0, 1)]
    seen = [indices(p) for p in ranks]
    assert sorted(seen[0] + seen[1]) == list(range(11))
    assert [len(p) for p in ranks] == [2, 2]


def test_training_shards_keep_ranks_in_step() -> None:
    padded = [pipeline(shapes_item(11, batch_size=3), rank=r, world_size=2) for r in (0, 1)]
    assert [len(p) for p in padded] == [2, 2]
    assert set(indices(padded[0]) + indices(padded[1])) == set(range(11))
    dropped = [
        pipeline(shapes_item(11, batch_size=2, drop_last=True, shuffle=True), rank=r, world_size=2)
        for r in (0, 1)
    ]
    a, b = (indices(p) for p in dropped)
    assert len(a) == len(b) == 4 and not set(a) & set(b)


def test_to_device_normalizes_to_input_dtype() -> None:
    norm = Augmentation("Normalize", {"mean": [0.5] * 3, "std": [0.5] * 3})
    item = DataItem(
        dataset=Dataset(
            name="Shapes",
            params={"num_samples": 4, "image_size": 8, "input_dtype": "bfloat16"},
            transform=(norm, Augmentation("ToTensorV2")),
        ),
        dataloader=DataLoader(batch_size=4),
    )
    p = pipeline(item, Phase.VALID)
    batch = next(iter(p))
    out = p.to_device(batch)
    assert out["image"].dtype == torch.bfloat16
    pixels = torch.stack([p.dataset[i]["image"] for i in batch["index"].tolist()])
    expected = pixels.float() / 255 * 2 - 1
    torch.testing.assert_close(out["image"].float(), expected, atol=1e-2, rtol=0)
    assert torch.equal(out["target"], batch["target"])


def test_resize_runs_per_sample_so_mixed_sizes_batch(tmp_path: Path) -> None:
    rows = ["image_path,label"]
    for i, size in enumerate([(6, 9), (12, 5), (7, 7)]):
        Image.fromarray(np.full((*size, 3), 50 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{i}")
    (tmp_path / "a.csv").write_text("\n".join(rows))
    dataset = Dataset(
        name="ImageClassificationDataset",
        params={"data_folder": str(tmp_path), "annotation_path": "a.csv"},
        transform=(Augmentation("Resize", {"height": 4, "width": 5}),),
    )
    batch = next(iter(pipeline(DataItem(dataset, DataLoader(batch_size=3)), Phase.VALID)))
    assert batch["image"].shape == (3, 3, 4, 5)
    without = DataItem(Dataset(dataset.name, dataset.params), DataLoader(batch_size=3))
    with pytest.raises(OkcError, match=r"different shapes.*add Resize"):
        next(iter(pipeline(without, Phase.VALID)))


def _csv_with_corrupt(tmp_path: Path) -> DataItem:
    rows = ["image_path,label"]
    for i in range(6):
        Image.fromarray(np.full((4, 4, 3), i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{i % 2}")
    (tmp_path / "3.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "a.csv").write_text("\n".join(rows))
    return DataItem(
        Dataset(
            "ImageClassificationDataset",
            {"data_folder": str(tmp_path), "annotation_path": "a.csv"},
        ),
        DataLoader(batch_size=4, num_workers=2),
    )


def test_corrupt_file_fails_with_file_and_row(tmp_path: Path) -> None:
    item = _csv_with_corrupt(tmp_path)
    with pytest.raises(OkcError, match=r"3\.png.*a\.csv line 5 \(row 3\)"):
        list(pipeline(item, Phase.VALID))


def test_skip_corrupt_skips_and_counts(tmp_path: Path) -> None:
    item = _csv_with_corrupt(tmp_path)
    params = {**item.dataset.params, "skip_corrupt": True}
    item = DataItem(Dataset(item.dataset.name, params), item.dataloader)
    p = pipeline(item, Phase.VALID)
    with pytest.warns(UserWarning, match=r"skipped .*3\.png.*\(1 skipped so far\)"):
        seen = indices(p)
    assert seen == [0, 1, 2, 4, 5] and p.num_skipped == 1


def test_weighted_sampler(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_text("weight\n" + "\n".join(["0", "1", "0", "3"] * 3))
    item = DataItem(
        Dataset("Shapes", {"num_samples": 12, "image_size": 8}),
        DataLoader(batch_size=5),
        sampler=_sampler(tmp_path, num_samples=40),
    )
    drawn = indices(pipeline(item, seed=1))
    assert len(drawn) == 40 and {i % 4 for i in drawn} == {1, 3}
    assert drawn == indices(pipeline(item, seed=1))


def _sampler(tmp_path: Path, **params: Any):
    from okc.config.schema import Component

    return Component("WeightedSampler", {"annotation_path": str(tmp_path / "w.csv"), **params})


def test_sampler_with_shuffle_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_text("weight\n1\n1\n")
    item = DataItem(
        Dataset("Shapes", {"num_samples": 2, "image_size": 8}),
        DataLoader(batch_size=1, shuffle=True),
        sampler=_sampler(tmp_path),
    )
    with pytest.raises(ConfigError, match=r"data.TRAIN.0.dataloader.shuffle: a sampler"):
        pipeline(item)


def test_drop_last_outside_train_warns() -> None:
    with pytest.warns(UserWarning, match=r"data.VALID.0.dataloader.drop_last"):
        pipeline(shapes_item(8, drop_last=True), Phase.VALID)


def test_build_errors_name_the_key_path(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("path,label\n")
    item = DataItem(
        Dataset(
            "ImageClassificationDataset", {"data_folder": str(tmp_path), "annotation_path": "a.csv"}
        )
    )
    with pytest.raises(ConfigError, match=r"data.TRAIN.0.dataset.params: .*no column 'image_path'"):
        pipeline(item)
    missing = DataItem(
        Dataset("ImageFolder", {"data_folder": str(tmp_path / "nowhere")}),
    )
    with pytest.raises(
        ConfigError, match=r"data.TRAIN.0.dataset.params: image folder does not exist"
    ):
        pipeline(missing)
    typo = DataItem(Dataset("Shapes", {"num_sample": 3}))
    with pytest.raises(
        ConfigError, match=r"params.num_sample: Shapes has no parameter 'num_sample'"
    ):
        pipeline(typo)


def test_num_workers_auto_reads_memory_in_place_and_files_in_threads(monkeypatch) -> None:
    from okc.data.pipeline import loader_threads

    monkeypatch.setattr("os.cpu_count", lambda: 4)
    shapes = pipeline(shapes_item(8))  # generated per sample: not a batched read
    assert not shapes._reader.batched
    assert loader_threads("auto", shapes._reader) == 3 and loader_threads(2, shapes._reader) == 2
    # a number is an upper bound (TorchOk's files write 8 meaning processes): at most the cores
    assert loader_threads(8, shapes._reader) == 4 and loader_threads(0, shapes._reader) == 0
    monkeypatch.setattr("os.cpu_count", lambda: 2)  # two threads still beat one (perf/README)
    assert loader_threads("auto", shapes._reader) == 2
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert loader_threads("auto", shapes._reader) == 1
    shapes._reader.batched = True  # what an in-memory dataset (CIFAR) declares
    assert loader_threads("auto", shapes._reader) == 0 and loader_threads(4, shapes._reader) == 0


def test_sample_forms_match_the_ops_they_stand_for_on_one_uint8_sample() -> None:
    """On a CPU device the augment tail runs per sample in uint8 (okc.data.sample_ops): each form
    gives what the op itself gives on that sample (OneSample), from the same draws."""
    import kornia.augmentation as K

    from okc.data import rng
    from okc.data.ops import OneSample, RandomFlip
    from okc.data.photometric import FancyPCA
    from okc.data.sample_ops import sample_form

    image = torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8)
    image[0] //= 2  # channels of different spread: a covariance with distinct eigenvalues
    mask = torch.randint(0, 5, (1, 20, 24))
    for op in (FancyPCA(0.5, p=0.5), RandomFlip([(True, False), (False, True)], p=0.7)):
        form, changed = sample_form(op), 0
        for seed in range(12):
            with rng.sample_generator(seed):
                want, want_masks, _ = OneSample(op).apply(image, [mask], None)
            with rng.sample_generator(seed):
                got, got_masks, _ = form.apply(image, [mask], None)
            assert got.dtype == torch.uint8 and (got.int() - want.int()).abs().max() <= 1
            assert torch.equal(got_masks[0], want_masks[0])
            changed += not torch.equal(got, image)
        assert 0 < changed < 12  # p < 1: some samples drew the op, some did not
    crop, offsets = sample_form(K.RandomCrop((12, 16))), set()
    for seed in range(12):
        with rng.sample_generator(seed):
            got, got_masks, _ = crop.apply(image, [mask], None)
        top, left = next(
            (y, x) for y in range(9) for x in range(9) if torch.equal(got, image[:, y:y + 12, x:x + 16])
        )  # fmt: skip
        assert torch.equal(got_masks[0], mask[:, top : top + 12, left : left + 16])
        offsets.add((top, left))
    assert len(offsets) > 6
    with pytest.raises(OkcError, match="RandomCrop 12x16 of a 10x24 image"):
        crop.apply(image[:, :10], [], None)
    # ops without a uint8 form keep the batched tail on the device
    assert sample_form(K.RandomCrop((12, 16), padding=4)) is None
    assert sample_form(K.ColorJitter(0.2, 0.2)) is None


def imagenet_recipe_item(folder: Path, **loader: Any) -> DataItem:
    """TorchOk's classification_imagenet.yaml TRAIN augment, scaled down to tiny images."""
    for i in range(6):
        size = (20, 30) if i % 2 else (26, 18)
        (folder / f"c{i % 2}").mkdir(exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"c{i % 2}" / f"{i}.png")
    augment = (
        Augmentation("Resize", {"height": 16, "width": 16}),
        Augmentation("FancyPCA", {"alpha": 0.1, "p": 0.5}),
        Augmentation("HorizontalFlip", {"p": 0.5}),
        Augmentation("RandomCrop", {"p": 1, "height": 12, "width": 12}),
    )
    transform = (Augmentation("Normalize", {}), Augmentation("ToTensorV2"))
    dataset = Dataset(
        "ImageFolder", {"data_folder": str(folder)}, transform=transform, augment=augment
    )
    return DataItem(dataset, DataLoader(**{"batch_size": 3, "shuffle": True, **loader}))


def test_cpu_tail_in_threads_repeats_and_resumes_exactly(tmp_path: Path) -> None:
    """The ImageNet recipe on a CPU device: finished float batches from two loader threads,
    the same in every run and after a mid-epoch resume (each sample draws from its own stream)."""
    item = imagenet_recipe_item(tmp_path, num_workers=2)
    first = pipeline(item, seed=3)
    batches = [b["image"] for b in first]
    assert batches[0].shape == (3, 3, 12, 12) and batches[0].dtype == torch.float32
    again = pipeline(item, seed=3)
    it = iter(again)
    assert torch.equal(next(it)["image"], batches[0])
    state = again.state_dict()
    resumed = pipeline(item, seed=3)
    resumed.load_state_dict(state)
    rest = [b["image"] for b in resumed]
    assert len(rest) == 1 and torch.equal(rest[0], batches[1])
    other = [b["image"] for b in pipeline(item, seed=4)]
    assert not torch.equal(torch.cat(other), torch.cat(batches))


def test_batch_buffers_reuse_memory_only_once_nobody_holds_it() -> None:
    from okc.data.sample_ops import BatchBuffers

    buffers = BatchBuffers(keep=4)
    first = buffers.take((2, 3))
    memory = first.data_ptr()
    assert buffers.take((2, 3)).data_ptr() != memory  # the first batch is still held
    row = first[0]
    del first
    assert buffers.take((2, 3)).data_ptr() != memory  # a view of it is still held
    del row
    weight = torch.ones(3, requires_grad=True)
    again = buffers.take((2, 3))
    assert again.data_ptr() == memory  # free: reused
    loss = (again * weight).sum()  # autograd keeps the batch for the backward pass
    del again
    assert buffers.take((2, 3)).data_ptr() != memory
    loss.backward()
    del loss
    assert buffers.take((2, 3)).data_ptr() == memory
    assert buffers.take((4, 3)).shape == (4, 3)  # another shape: its own buffer
