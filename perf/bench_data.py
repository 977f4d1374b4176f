"""Images/s of okc's data pipeline against a per-sample torch DataLoader, on the same files.

okc: decode in threads → batch → Kornia augmentation on the whole batch (on ``--device``).
Baseline: ``torch.utils.data.DataLoader`` (worker processes) over torchvision's ImageFolder (PIL)
with per-sample ``torchvision.transforms.v2`` augmentation. Both do the same work: flip, pad-crop,
colour jitter (p=0.5), float conversion, normalize. Files are written to a temporary folder
(Shapes images as JPEG/PNG in ImageFolder layout), or ``--data`` points at an existing
``<class>/<image>`` folder such as the unpacked cifar10-jpeg ``train/``.

    .venv/bin/python perf/bench_data.py [--num-images 4096] [--batch-size 128] [--num-workers 2]
"""

from __future__ import annotations

import argparse
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
    pipeline = build_pipeline(item, phase=Phase.TRAIN, path="data.TRAIN.0", device=args.device)

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
    loader = torch.utils.data.DataLoader(
        ImageFolder(str(root), transform=transform),
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


def images_per_second(epoch: Callable[[], Iterable[Any]], batch_size: int, epochs: int) -> float:
    for _ in epoch():  # warm-up: workers start, caches fill, first-call overheads paid
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


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
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
    parser.add_argument("--num-images", type=int, default=4096)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--format", choices=["jpg", "png"], default="jpg")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="measurements; the best counts")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--data", type=Path, help="an existing <class>/<image> folder instead")
    return parser.parse_args()


if __name__ == "__main__":
    main()
