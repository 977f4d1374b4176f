"""Images/s of okc's data pipeline against a per-sample torch DataLoader, on the same files.

okc: decode in threads → batch → Kornia augmentation on the whole batch (on ``--device``).
Baseline: ``torch.utils.data.DataLoader`` (worker processes) over torchvision's ImageFolder (PIL)
with per-sample ``torchvision.transforms.v2`` augmentation. Both do the same work: flip, pad-crop,
colour jitter (p=0.5), float conversion, normalize. Files are written to a temporary folder
(Shapes images as JPEG/PNG in ImageFolder layout), or ``--data`` points at an existing
``<class>/<image>`` folder such as the unpacked cifar10-jpeg ``train/``.

    .venv/bin/python perf/bench_data.py [--num-images 4096] [--batch-size 128] [--num-workers 2]

``--recipe imagenet``: TorchOk's classification_imagenet.yaml TRAIN recipe (Resize 256x256,
FancyPCA alpha 0.1 p 0.5, HorizontalFlip, RandomCrop 224, Normalize) on generated ImageNet-like
JPEGs (400-500 px long side, varied aspect, textured, quality 90), with and without FancyPCA:
okc's ``build_pipeline`` (``num_workers`` as written and ``auto``) against DataLoader worker
processes running albumentations + cv2 (TorchOk's way) and torchvision v2 + PIL (no FancyPCA:
torchvision has none). Rounds interleave the sides; medians and ratios are printed.

    .venv/bin/python perf/bench_data.py --recipe imagenet [--num-images 1536] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from okc.config.schema import Augmentation, DataItem, DataLoader, Dataset, Phase
from okc.data import build_pipeline
from okc.data.datasets.shapes import Shapes

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def write_images(folder: Path, num: int, size: int, fmt: str) -> None:
    """Shapes images as files: class sub-folders, like CIFAR-10 JPEGs."""
    from PIL import Image

    shapes = Shapes(num_samples=num, image_size=size)
    for i in range(num):
        sample = shapes[i]
        target = folder / shapes.classes[int(sample["target"])]
        target.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(sample["image"].permute(1, 2, 0).numpy())
        image.save(target / f"{i:05d}.{fmt}", quality=75) if fmt == "jpg" else image.save(
            target / f"{i:05d}.{fmt}"
        )


def okc_batches(root: Path, args: argparse.Namespace) -> Callable[[], Iterable[Any]]:
    crop = Augmentation("RandomCrop", {"size": [args.image_size] * 2, "padding": 4})
    item = DataItem(
        dataset=Dataset(
            name="ImageFolder",
            params={"data_folder": str(root)},
            transform=(Augmentation("Normalize", {"mean": MEAN, "std": STD}),),
            augment=(
                Augmentation("HorizontalFlip"),
                crop,
                Augmentation(
                    "ColorJitter",
                    {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1},
                ),
            ),
        ),
        dataloader=DataLoader(
            batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers, drop_last=True
        ),
    )
    pipeline = build_pipeline(item, phase=Phase.TRAIN, device=args.device)

    def run() -> Iterable[Any]:
        for batch in pipeline:
            yield pipeline.to_device(batch)

    return run


def torch_batches(root: Path, args: argparse.Namespace) -> Callable[[], Iterable[Any]]:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.ToImage(),
            v2.RandomHorizontalFlip(),
            v2.RandomCrop(args.image_size, padding=4),
            v2.RandomApply([v2.ColorJitter(0.2, 0.2, 0.2, 0.1)], p=0.5),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )
    return _processes(ImageFolder(str(root), transform=transform), args)


def images_per_second(
    epoch: Callable[[], Iterable[Any]], batch_size: int, epochs: int, *, warm: bool = True
) -> float:
    if warm:  # warm-up: workers start, caches fill, first-call overheads paid
        for _ in epoch():
            pass
    start, count = time.perf_counter(), 0
    for _ in range(epochs):
        for _ in epoch():
            count += batch_size
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def loader_overhead(batch_size: int, num_workers: int) -> tuple[float, float]:
    """What the okc loader itself costs over an in-memory dataset that does nothing:
    (µs per sample within an epoch, ms per epoch start), from a short and a long epoch."""
    from okc.data.collate import collate
    from okc.data.loader import BatchLoader
    from okc.data.sampling import BatchOrder

    image = torch.zeros(3, 32, 32, dtype=torch.uint8)

    def load(indices: list[int]) -> dict[str, Any]:
        return collate([{"image": image, "target": i, "index": i} for i in indices])

    def epoch_seconds(num_batches: int) -> float:
        order = BatchOrder(num_batches * batch_size, batch_size=batch_size, shuffle=True)
        loader = BatchLoader(order, load, num_workers=num_workers)
        list(loader)
        start = time.perf_counter()
        list(loader)
        return time.perf_counter() - start

    short, long_ = epoch_seconds(10), epoch_seconds(210)
    per_batch = (long_ - short) / 200
    return per_batch / batch_size * 1e6, (short - 10 * per_batch) * 1e3


# --- the ImageNet recipe (--recipe imagenet) ----------------------------------------------------

# TorchOk's examples/configs/classification_imagenet.yaml, TRAIN: augment then transform.
IMAGENET_AUGMENT = (
    Augmentation("Resize", {"height": 256, "width": 256}),
    Augmentation("FancyPCA", {"alpha": 0.1, "p": 0.5}),
    Augmentation("HorizontalFlip", {"p": 0.5}),
    Augmentation("RandomCrop", {"p": 1, "height": 224, "width": 224}),
)
IMAGENET_TRANSFORM = (
    Augmentation("Normalize", {"mean": MEAN, "std": STD}),
    Augmentation("ToTensorV2"),
)


def imagenet_like(generator: torch.Generator) -> Any:
    """One PIL image of ImageNet's sizes (400-500 px long side, aspect 0.6-1, mostly landscape)
    with texture at several scales and grain, so a JPEG of it costs what a photo costs to
    decode (about 70-100 KB at quality 90, as ImageNet's files are)."""
    import torch.nn.functional as F
    from PIL import Image

    def draw(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator)

    long_ = 400 + int(draw(1) * 101)
    short = round(long_ * (0.6 + 0.4 * float(draw(1))))
    height, width = (short, long_) if float(draw(1)) < 0.75 else (long_, short)
    image = 60 + 130 * draw(3, 1, 1)
    for cells, amplitude in ((3, 80), (12, 40), (40, 25), (120, 22)):
        grid = torch.randn(1, 3, cells, cells, generator=generator)
        image = image + amplitude * F.interpolate(grid, size=(height, width), mode="bilinear")[0]
    image = image + 8 * torch.randn(1, height, width, generator=generator)
    return Image.fromarray(image.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())


def write_imagenet_like(folder: Path, num: int, num_classes: int = 8) -> float:
    """``num`` JPEGs in ``folder/<class>/``; returns their mean size in KB. A folder written
    before with the same count is reused (generating costs more than a benchmark round)."""
    files = sorted(folder.glob("*/*.jpg"))
    if len(files) != num:
        generator = torch.Generator().manual_seed(0)
        for i in range(num):
            target = folder / f"class{i % num_classes}"
            target.mkdir(parents=True, exist_ok=True)
            imagenet_like(generator).save(target / f"{i:05d}.jpg", quality=90)
        files = sorted(folder.glob("*/*.jpg"))
    return sum(f.stat().st_size for f in files) / len(files) / 1024


def imagenet_item(root: Path, args: argparse.Namespace, fancy_pca: bool, workers: Any) -> DataItem:
    augment = tuple(a for a in IMAGENET_AUGMENT if fancy_pca or a.name != "FancyPCA")
    return DataItem(
        dataset=Dataset(
            name="ImageFolder",
            params={"data_folder": str(root)},
            transform=IMAGENET_TRANSFORM,
            augment=augment,
        ),
        dataloader=DataLoader(
            batch_size=args.batch_size, shuffle=True, num_workers=workers, drop_last=True
        ),
    )


def okc_imagenet(
    root: Path, args: argparse.Namespace, fancy_pca: bool, workers: Any, *, batched: bool = False
) -> Callable[[], Iterable[Any]]:
    """okc's pipeline as a user gets it; ``batched``: the tail (flip, crop, FancyPCA, Normalize)
    batched on the device even on a CPU, as okc ran it before ``okc.data.sample_ops`` (a lever)."""
    from unittest import mock

    from okc.data import pipeline as module

    item = imagenet_item(root, args, fancy_pca, workers)
    keep = mock.patch.object(module, "_cpu_tail", lambda *a: (*a[:3], None))
    with keep if batched else contextlib.nullcontext():
        pipeline = build_pipeline(item, phase=Phase.TRAIN, device=args.device)

    def run() -> Iterable[Any]:
        for batch in pipeline:
            yield pipeline.to_device(batch)

    return run


class _Cv2Folder:
    """TorchOk's ImageClassificationDataset reading: cv2.imread, BGR → RGB, albumentations
    augment then transform on the uint8 HWC array."""

    def __init__(self, root: Path, transform: Any) -> None:
        self.paths = sorted(str(p) for p in root.glob("*/*.jpg"))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        import cv2

        image = cv2.cvtColor(cv2.imread(self.paths[index]), cv2.COLOR_BGR2RGB)
        return self.transform(image=image)["image"], index % 8


def albumentations_imagenet(
    root: Path, args: argparse.Namespace, fancy_pca: bool
) -> Callable[[], Iterable[Any]]:
    return _processes(_Cv2Folder(root, albumentations_recipe(fancy_pca)), args)


def albumentations_recipe(fancy_pca: bool) -> Any:
    """TorchOk's ImageNet TRAIN recipe as albumentations runs it (augment, then transform)."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    ops = [A.Resize(height=256, width=256)]
    ops += [A.FancyPCA(alpha=0.1, p=0.5)] if fancy_pca else []
    ops += [A.HorizontalFlip(p=0.5), A.RandomCrop(height=224, width=224, p=1)]
    ops += [A.Normalize(mean=MEAN, std=STD), ToTensorV2()]
    return A.Compose(ops)


def torchvision_imagenet(root: Path, args: argparse.Namespace) -> Callable[[], Iterable[Any]]:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((256, 256)),
            v2.RandomHorizontalFlip(),
            v2.RandomCrop(224),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )
    return _processes(ImageFolder(str(root), transform=transform), args)


def _processes(dataset: Any, args: argparse.Namespace) -> Callable[[], Iterable[Any]]:
    """A DataLoader with ``--num-workers`` worker processes, as TorchOk/Lightning build it."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.num_workers,
        drop_last=True,
        persistent_workers=args.num_workers > 0,
    )
    device = torch.device(args.device)

    def run() -> Iterable[Any]:
        for image, target in loader:
            yield image.to(device, non_blocking=True), target.to(device, non_blocking=True)

    return run


def imagenet_main(args: argparse.Namespace) -> None:
    root = args.data or Path(tempfile.gettempdir()) / f"okc-bench-imagenet-{args.num_images}"
    start = time.perf_counter()
    size_kb = write_imagenet_like(root, args.num_images) if args.data is None else 0.0
    print(f"{args.num_images} JPEGs in {root} ({size_kb:.0f} KB mean), ready in "
          f"{time.perf_counter() - start:.1f}s")  # fmt: skip
    import albumentations
    import cv2

    print(f"albumentations {albumentations.__version__}, cv2 {cv2.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(
        f"device {args.device}, batch {args.batch_size}, num_workers {args.num_workers}, "
        f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"{args.rounds} interleaved rounds of {args.epochs} epoch(s), medians"
    )
    sides: dict[str, Callable[[], Iterable[Any]]] = {}
    for fancy in (True, False):
        tag = "FancyPCA" if fancy else "no FancyPCA"
        sides[f"okc, num_workers {args.num_workers}, {tag}"] = okc_imagenet(
            root, args, fancy, args.num_workers
        )
        sides[f"okc, num_workers auto, {tag}"] = okc_imagenet(root, args, fancy, "auto")
        sides[f"albumentations + cv2, {tag}"] = albumentations_imagenet(root, args, fancy)
        if not fancy:
            sides[f"torchvision v2 + PIL, {tag}"] = torchvision_imagenet(root, args)
        if args.levers:
            sides[f"okc tail batched (before), num_workers {args.num_workers}, {tag}"] = (
                okc_imagenet(root, args, fancy, args.num_workers, batched=True)
            )
    for epoch in sides.values():  # warm-up: worker processes start, first-call costs paid
        for _ in epoch():
            pass
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):  # interleaved: a busy neighbour slows every side alike
        for name, epoch in sides.items():
            rates[name].append(images_per_second(epoch, args.batch_size, args.epochs, warm=False))
    median = {name: statistics.median(values) for name, values in rates.items()}
    print("| side | images/s (median) | rounds |")
    print("|---|---|---|")
    for name, values in rates.items():
        print(f"| {name} | {median[name]:.0f} | {', '.join(f'{v:.0f}' for v in values)} |")
    for tag in ("FancyPCA", "no FancyPCA"):
        peers = [n for n in median if not n.startswith("okc") and n.endswith(f", {tag}")]
        best = max(peers, key=median.__getitem__)
        for name in (n for n in median if n.startswith("okc") and n.endswith(f", {tag}")):
            print(f"{name}: {median[name] / median[best]:.2f}x {best}")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.recipe == "imagenet":
        imagenet_main(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = Path(tmp)
            start = time.perf_counter()
            write_images(root, args.num_images, args.image_size, args.format)
            elapsed = time.perf_counter() - start
            print(f"wrote {args.num_images} {args.format} files in {elapsed:.1f}s")
        print(
            f"device {args.device}, batch {args.batch_size}, {args.num_workers} workers, "
            f"torch threads {torch.get_num_threads()}, best of {args.repeats}"
        )
        okc_epoch, torch_epoch = okc_batches(root, args), torch_batches(root, args)
        okc_rate = torch_rate = 0.0
        for _ in range(args.repeats):  # alternate, so a busy neighbour slows both alike
            okc_rate = max(okc_rate, images_per_second(okc_epoch, args.batch_size, args.epochs))
            torch_rate = max(
                torch_rate, images_per_second(torch_epoch, args.batch_size, args.epochs)
            )
        print(f"okc (threads + batched Kornia on {args.device}): {okc_rate:8.0f} images/s")
        print(f"torch DataLoader + per-sample v2 transforms: {torch_rate:8.0f} images/s")
        print(f"ratio okc / per-sample: {okc_rate / torch_rate:.2f}x")
        per_sample, per_epoch = loader_overhead(args.batch_size, args.num_workers)
        print(
            f"okc loader overhead (no decode, no augment): {per_sample:.1f} us/sample "
            f"+ {per_epoch:.0f} ms per epoch start"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", choices=["cifar", "imagenet"], default="cifar")
    parser.add_argument("--num-images", type=int, help="default: 4096 (cifar), 1536 (imagenet)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--format", choices=["jpg", "png"], default="jpg")
    parser.add_argument("--batch-size", type=int, help="default: 128 (cifar), 64 (imagenet)")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="cifar: measurements, the best")
    parser.add_argument("--rounds", type=int, default=3, help="imagenet: rounds, the median")
    parser.add_argument(
        "--levers", action="store_true", help="imagenet: also okc with the tail batched (before)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--data", type=Path, help="an existing <class>/<image> folder instead")
    args = parser.parse_args()
    imagenet = args.recipe == "imagenet"
    args.num_images = args.num_images or (1536 if imagenet else 4096)
    args.batch_size = args.batch_size or (64 if imagenet else 128)
    return args


if __name__ == "__main__":
    main()
