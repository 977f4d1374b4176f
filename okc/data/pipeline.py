"""A data item of the experiment, built: dataset → batches on the CPU → augmented on the device.

``DataPipeline`` iterates CPU batches (uint8 images, collated targets) from the threaded loader;
``to_device`` moves one to the device and runs augmentation (TRAIN only) and the batched part of
``transform``, eagerly (Kornia does not compile with fullgraph), ending with ``input_dtype``.

What runs where: ops whose output size depends on the input's run on each sample in the loader
threads, on the CPU, before batching: augment's ops up to and including its last size op (random
ops before it too, in the file's order: ``okc.data.augment.split_augment``), then the
transform's size ops. Everything else runs on the batch, on the device: the rest of augment,
then the rest of transform. On a CPU device that rest runs in the loader threads instead when
it can, per sample in uint8, the float batch made there (``_cpu_tail``, ``okc.data.sample_ops``).
TorchOk ran augment then transform; okc runs the transform's size ops ahead of augment's
batched tail, which is what lets that tail run on whole batches. Random ops of the per-sample
stage draw from a stream of the sample's own, seeded by (seed, epoch, index)
(``okc.data.rng``), so thread timing never changes a run.

Boxes (``bboxes`` with their ``label``, one tensor per image) follow the first image key through
the per-sample size ops and the batched augment/transform (``okc.data.ops.Boxes``), with the
dataset's ``min_area`` and ``min_visibility`` deciding which boxes the ops' cropping drops.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from okc.config.bind import construct, make
from okc.config.schema import DataItem, Phase
from okc.data import rng
from okc.data.augment import build_ops, split_augment, split_transform
from okc.data.collate import collate
from okc.data.datasets.base import SampleSpec
from okc.data.io import CorruptSampleError
from okc.data.loader import BatchLoader
from okc.data.ops import Boxes, Chain, Normalize, box_problem, run
from okc.data.sample_ops import SampleNormalize, sample_forms, sample_normalize
from okc.data.samplers import supplied
from okc.data.sampling import BatchOrder, IndexSampler
from okc.errors import ConfigError, ConfigErrors, OkcError, at
from okc.registry import DATASETS, SAMPLERS
from okc.tree import map_tensors

# Sample keys holding label maps: they follow geometric augmentations, nearest-neighbour.
MASK_KEYS = ("mask", "instances")
# Sample keys of boxes (N, 4) xyxy pixels and their labels (N,); they follow geometric ops.
BOX_KEYS = ("bboxes", "label")


def _boxes(spec: SampleSpec, values: dict[str, Any]) -> Boxes | None:
    """The batch's (or a sample's, as one-image lists) boxes, or None when it has none."""
    boxes, labels = values.get(BOX_KEYS[0]), values.get(BOX_KEYS[1])
    if boxes is None:
        return None
    if isinstance(boxes, torch.Tensor):  # one sample
        boxes, labels = [boxes], None if labels is None else [labels]
    if labels is None:  # boxes of one kind: placeholders ride along and are not written back
        labels = [torch.zeros(len(b), dtype=torch.long, device=b.device) for b in boxes]
    return Boxes(boxes, labels, min_area=spec.min_area, min_visibility=spec.min_visibility)


def _put_boxes(out: dict[str, Any], boxes: Boxes, like: dict[str, Any], one: bool) -> None:
    """Write ``boxes`` back in the dtypes the dataset gave (a tensor per sample, or lists)."""
    dtype = (like[BOX_KEYS[0]] if one else like[BOX_KEYS[0]][0]).dtype if boxes.boxes else None
    values = [b.to(dtype) for b in boxes.boxes]
    out[BOX_KEYS[0]] = values[0] if one else values
    if BOX_KEYS[1] in like:
        out[BOX_KEYS[1]] = boxes.labels[0] if one else boxes.labels


def build_dataset(item: DataItem) -> Any:
    """The item's dataset; errors relative to the item (``dataset.params.num_samples``), a
    missing folder or a bad CSV at ``dataset.params``."""
    with at("dataset"):
        try:
            return make(DATASETS, item.dataset.name, item.dataset.params)
        except ConfigErrors as err:
            if len(err.errors) == 1:  # one problem is one ConfigError, as a build error always was
                raise err.errors[0] from err
            raise
        except ConfigError:
            raise
        except OkcError as err:  # a missing folder, a bad CSV: say which config item pointed there
            raise ConfigError("params", str(err)) from err


class _LoadFailure:
    """An error raised while loading in a worker thread, re-raised as is in the caller."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _BatchReader:
    """Reads one batch: samples, per-sample size ops, collate; skips corrupt samples if asked."""

    def __init__(
        self,
        dataset: Any,
        per_sample: Sequence[nn.Module],
        order: BatchOrder | None = None,
        finish: SampleNormalize | None = None,
    ) -> None:
        self.dataset = dataset
        self.per_sample = list(per_sample)
        self.order = order  # its seed and epoch seed each sample's random draws
        self.finish = finish  # the float sample, normalized (a CPU device: ``_cpu_tail``)
        self.spec = spec = SampleSpec.of(dataset)
        self.image_keys, self.ragged_keys, self.skip = (
            spec.image_keys, spec.ragged_keys, spec.skip_corrupt,
        )  # fmt: skip
        # In-memory data read a batch at a time (one gather), unless a sample needs an op first.
        self.batched = spec.reads_batches and not self.per_sample and not self.skip
        self.num_skipped = 0
        self._lock = threading.Lock()

    def __call__(self, indices: list[int]) -> dict[str, Any] | _LoadFailure:
        try:
            if self.batched:
                return self.dataset.__getitems__(indices)
            samples = [s for s in map(self._sample, indices) if s is not None]
            if self.finish is None or not samples:
                return collate(samples, ragged_keys=self.ragged_keys)
            # the float batch is filled from the samples: no uint8 batch stacked on the way
            keys = self.image_keys
            rest = [{k: v for k, v in s.items() if k not in keys} for s in samples]
            batch = collate(rest, ragged_keys=self.ragged_keys)
            for key in keys:
                images = [s[key] for s in samples]
                if any(image.shape != images[0].shape for image in images):
                    collate([{key: image} for image in images])  # its error names the shapes
                batch[key] = self.finish(images)
            return batch
        except OkcError as err:
            return _LoadFailure(err)

    def _sample(self, index: int) -> dict[str, Any] | None:
        try:
            sample = self.dataset[index]
        except CorruptSampleError as err:
            if not self.skip:
                raise
            with self._lock:
                self.num_skipped += 1
                count = self.num_skipped
            warnings.warn(f"skip_corrupt: skipped {err} ({count} skipped so far)", stacklevel=2)
            return None
        if self.per_sample:
            seed, epoch = (self.order.seed, self.order.epoch) if self.order else (0, 0)
            with rng.sample_generator(rng.sample_seed(seed, epoch, index)):
                sample = self._resize(sample)
        return sample

    def _resize(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Size ops on each image; label maps and boxes follow the first image (ops want
        (C,H,W)). Random ops here draw from the sample's own stream (``okc.data.rng``)."""
        out = dict(sample)
        for n, key in enumerate(self.image_keys):
            keys = [k for k in MASK_KEYS if k in sample] if n == 0 else []
            boxes = _boxes(self.spec, sample) if n == 0 else None
            image, masks = sample[key], [sample[k][None] for k in keys]
            for op in self.per_sample:
                image, masks, boxes = run(op, image, masks, boxes)
            out[key] = image
            out.update({k: m[0] for k, m in zip(keys, masks, strict=True)})
            if boxes is not None:
                _put_boxes(out, boxes, sample, one=True)
        return out


class DataPipeline:
    """Batches of one data item on this rank, resumable mid-epoch.

    ``for batch in pipeline`` yields CPU batches (``image`` uint8 B,C,H,W; already augmented
    and normalized, of ``input_dtype``, where ``_cpu_tail`` moved that work into the loader
    threads); ``to_device(batch)`` returns it on the device, augmented (TRAIN) and transformed
    (normalized, ``input_dtype``).
    """

    def __init__(
        self,
        dataset: Any,
        loader: BatchLoader,
        *,
        reader: _BatchReader,
        augment: nn.Module | None,
        transform: nn.Module | None,
        device: torch.device,
    ) -> None:
        self.dataset = dataset
        self.device = device
        self.input_dtype = reader.spec.input_dtype
        self._image_keys = reader.image_keys
        self._loader = loader
        self._reader = reader
        self.augment = augment.to(device) if augment is not None else None
        self.transform = transform.to(device) if transform is not None else None

    def __len__(self) -> int:
        """Batches per epoch on this rank (fewer when corrupt samples empty a whole batch)."""
        return len(self._loader)

    @property
    def num_skipped(self) -> int:
        """Corrupt samples skipped so far (``skip_corrupt``)."""
        return self._reader.num_skipped

    @property
    def epoch(self) -> int:
        return self._loader.epoch

    @property
    def seed(self) -> int:
        """The seed of the shuffle (and sampler) order; a resumed run sets its own back."""
        return self._loader.order.seed

    @seed.setter
    def seed(self, value: int) -> None:
        self._loader.order.seed = value

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration reads (its shuffle order)."""
        self._loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self._loader:
            if isinstance(batch, _LoadFailure):
                raise batch.error
            if batch:  # every sample of the batch was corrupt and skipped
                yield batch

    def state_dict(self) -> dict[str, Any]:
        """Where the current epoch is (epoch, batches handed out); plain data for checkpoints."""
        return {"loader": self._loader.state_dict(), "num_batches": len(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the saved epoch after its last handed-out batch on the next iteration."""
        if state.get("num_batches") != len(self):
            raise OkcError(
                f"the saved data position is for {state.get('num_batches')} batches per epoch, "
                f"this pipeline has {len(self)}: dataset, batch size or world size changed"
            )
        self._loader.load_state_dict(state["loader"])

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch on the device: augmented (TRAIN), transformed, images of ``input_dtype``.

        Each image key is augmented with its own random draw; label maps follow the first one.
        Lists (ragged keys) are moved tensor by tensor.
        """
        out = map_tensors(lambda t: t.to(self.device, non_blocking=True), batch)
        for n, key in enumerate(self._image_keys):
            keys = [k for k in MASK_KEYS if k in out] if n == 0 else []
            boxes = _boxes(self._reader.spec, out) if n == 0 else None
            image = out[key].float().div_(255) if out[key].dtype == torch.uint8 else out[key]
            masks = [out[k][:, None].float() for k in keys]
            for stage in (self.augment, self.transform):
                if stage is not None:
                    image, masks, boxes = run(stage, image, masks, boxes)
            out[key] = image.to(self.input_dtype)
            for k, mask in zip(keys, masks, strict=True):
                out[k] = mask[:, 0].round().to(batch[k].dtype)
            if boxes is not None:
                _put_boxes(out, boxes, batch, one=False)
        return out


def build_pipeline(
    item: DataItem,
    *,
    phase: Phase,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
) -> DataPipeline:
    """Build the dataset, sampler, loader and augmentations of one data item.

    Errors are relative to the item; the caller places them (``with at("data.TRAIN.0")``) and
    warns of ``setting_warnings``, as ``okc.engine.loop`` does.
    """
    device = torch.device(device)
    loader_cfg = item.dataloader
    dataset, per_sample, augment_batched, batched = _stages(item, phase)
    sampler = _build_sampler(item, dataset)
    spec = SampleSpec.of(dataset)
    finish = None
    if (
        device.type == "cpu"
        and BOX_KEYS[0] not in spec.ragged_keys
        and not (spec.reads_batches and not per_sample)
    ):
        per_sample, augment_batched, batched, finish = _cpu_tail(
            per_sample, augment_batched, batched, spec.input_dtype
        )
    train = phase is Phase.TRAIN
    order = BatchOrder(
        len(dataset),
        batch_size=loader_cfg.batch_size,
        shuffle=loader_cfg.shuffle,
        drop_last=loader_cfg.drop_last,
        seed=seed,
        rank=rank,
        world_size=world_size,
        pad=train and not loader_cfg.drop_last,
        sampler=sampler,
    )
    pin = loader_cfg.pin_memory if loader_cfg.pin_memory is not None else device.type == "cuda"
    pin = pin and torch.cuda.is_available()
    reader = _BatchReader(dataset, per_sample, order, finish)
    loader = BatchLoader(
        order,
        reader,
        num_workers=loader_threads(loader_cfg.num_workers, reader),
        in_order=loader_cfg.in_order,
        pin_memory=pin,
        prefetch=loader_cfg.prefetch_factor or 2,
    )
    return DataPipeline(
        dataset,
        loader,
        reader=reader,
        augment=Chain(augment_batched) if augment_batched else None,
        transform=Chain(batched) if batched else None,
        device=device,
    )


def _stages(item: DataItem, phase: Phase) -> tuple[Any, list[nn.Module], ...]:
    """The item's dataset and ops: ``(dataset, per_sample, augment_batched, batched)``; errors
    relative to the item."""
    with at("dataset.transform"):
        transform = build_ops(item.dataset.transform)
    with at("dataset.augment"):
        augment = build_ops(item.dataset.augment) if phase is Phase.TRAIN else []
        augment_sized, augment_batched = split_augment(augment)
        _check_per_sample(augment_sized)
    sized, batched = split_transform(transform)
    dataset = build_dataset(item)
    if BOX_KEYS[0] in SampleSpec.of(dataset).ragged_keys:
        for key, built in (("dataset.transform", transform), ("dataset.augment", augment)):
            with at(key):
                _check_box_ops(built)
    return dataset, augment_sized + sized, augment_batched, batched


def _cpu_tail(
    per_sample: list[nn.Module],
    augment: list[nn.Module],
    transform: list[nn.Module],
    dtype: torch.dtype,
) -> tuple[list[nn.Module], list[nn.Module], list[nn.Module], SampleNormalize | None]:
    """On a CPU device, the batched tail moved into the loader threads when it can run there
    per sample in uint8 (``okc.data.sample_ops``): ``(per_sample, augment, transform, finish)``.

    Measured at 224 px (perf/README.md, "bench_data at 224 px"): the batched float ops cost the
    main thread 8 ms an image, run per sample in the threads they cost under 1 ms. A tail with an
    op that has no per-sample form stays as it was. Datasets read from memory a batch at a time
    keep their batched transform (one op on a whole batch beats a Python call per sample).
    """
    forms = sample_forms(augment)
    finish = sample_normalize(transform, dtype) if forms is not None else None
    if forms is None or finish is None:
        return per_sample, augment, transform, None
    return [*per_sample, *forms], [], [], finish


def _check_per_sample(built: Sequence[nn.Module]) -> None:
    """The per-sample stage keeps images uint8: an op there must keep pixel values in range."""
    for i, op in enumerate(built):
        if any(isinstance(m, Normalize) for m in op.modules()):
            raise ConfigError(
                f"{i}.name",
                "Normalize before augment's last size op would run on each sample's uint8 "
                "image; move it to the transform",
            )


def _check_box_ops(built: Sequence[nn.Module]) -> None:
    """Refuse, before any batch is read, an op that cannot move the dataset's boxes."""
    for i, op in enumerate(built):
        problem = box_problem(op)
        if problem:
            raise ConfigError(f"{i}.name", problem)


def loader_threads(num_workers: int | str, reader: _BatchReader) -> int:
    """The loader threads for ``num_workers`` (see ``DataLoader.num_workers``).

    A number is what the user allows, at most: TorchOk's files write 4 or 8 meaning worker
    processes. okc gives it no more threads than there are cores, and none for data read from
    memory a batch at a time, where a thread only contends with the training step for the cores
    (CIFAR in memory, resnet18, 2 cores: 0.90x the step's limit with ``num_workers: 2`` as two
    threads, 0.98x with none; perf/README.md).

    ``auto`` leaves a core to the step (at most 8 threads) but runs at least two where there
    are two cores: decoding and resizing release the GIL, and at 224 px on 2 cores two threads
    trained 1.08x faster than one (data path alone: 1.66x; perf/README.md).
    """
    if reader.batched:
        return 0
    cores = os.cpu_count() or 2
    if num_workers == "auto":
        return max(min(2, cores), min(8, cores - 1))
    return min(int(num_workers), cores)


def _build_sampler(item: DataItem, dataset: Any) -> IndexSampler | None:
    """The item's sampler, if any; errors relative to the item."""
    if item.sampler is None:
        return None
    if item.dataloader.shuffle:
        raise ConfigError("dataloader.shuffle", "a sampler sets the order: set shuffle: false")
    name, known = item.sampler.name, {"dataset": dataset, "batch_size": item.dataloader.batch_size}
    with at("sampler"):
        with at("name"):
            target = SAMPLERS.get(name)
        try:
            with at("params"):
                sampler = construct(target, item.sampler.params,
                                    **{key: known[key] for key in supplied(target)})  # fmt: skip
        except (ConfigError, ConfigErrors):
            raise
        except OkcError as err:
            raise ConfigError("params", str(err)) from err
        if not isinstance(sampler, IndexSampler):
            raise ConfigError(
                "name", f"{name} is not an okc sampler (needs num_indices() and order())"
            )
    return sampler


def setting_warnings(item: DataItem, phase: Phase) -> list[ConfigError]:
    """Settings that are allowed but probably not meant (to warn of), relative to the item.

    In VALID/TEST/PREDICT ``drop_last`` would silently leave samples unscored (TorchOk raised)."""
    found = []
    loader = item.dataloader
    if phase is not Phase.TRAIN and loader.drop_last:
        found.append(ConfigError("dataloader.drop_last", f"true in {phase.name} leaves the last "
                                 "samples out of the results (TorchOk refused it)"))  # fmt: skip
    if phase is not Phase.TRAIN and item.dataset.augment:
        found.append(ConfigError("dataset.augment", "augmentations run in TRAIN only; ignored "
                                 f"in {phase.name}"))  # fmt: skip
    if loader.timeout:
        found.append(ConfigError("dataloader.timeout", "has no effect in okc's threaded loader"))
    if loader.pin_memory and not torch.cuda.is_available():
        found.append(ConfigError("dataloader.pin_memory", "no CUDA device, not pinning"))
    return found
