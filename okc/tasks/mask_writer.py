"""``okc predict`` output for segmentation: one PNG mask per image and a CSV index of them.

Each PNG holds the predicted class index of every pixel, at the size the model saw (after the
dataset's ``transform`` resizes). Up to 256 classes it is a palette PNG: any image viewer shows
the classes in distinct colours (PASCAL VOC's colour map, class 0 black) while the pixel values
stay the class indices, which ``PIL`` (``np.array(Image.open(p))``) and okc's own mask reader
give back. More classes are written as 16-bit grayscale PNGs.

Files: ``<stem>.csv`` with columns ``index`` (the dataset index) and ``mask_path`` (relative to the
CSV's folder), and the masks in ``<stem>_masks/<index>.png``. A second PREDICT loader ``k`` writes
``<stem>_<k>.csv`` and ``<stem>_masks_<k>/``; under several processes each rank writes its own CSV
(``_rank<r>``) beside shared mask folders (ranks predict disjoint indices). PNGs are written as
batches arrive, so no prediction is held in memory.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from torch import Tensor

MAX_PALETTE_CLASSES = 256


def voc_palette() -> list[int]:
    """PASCAL VOC's colour map (256 RGB triplets, flattened): neighbouring classes contrast."""
    palette = []
    for label in range(256):
        r = g = b = 0
        for shift in range(7, -1, -1):
            r |= ((label >> 0) & 1) << shift
            g |= ((label >> 1) & 1) << shift
            b |= ((label >> 2) & 1) << shift
            label >>= 3
        palette += [r, g, b]
    return palette


class MaskWriter:
    """Writes ``outputs['prediction']`` (B, H, W) class indices as PNGs (see the module doc)."""

    def __init__(
        self, path: str | Path, *, rank: int = 0, world_size: int = 1, num_classes: int = 256
    ) -> None:
        self.path = Path(path).expanduser()
        self.rank, self.world_size = rank, world_size
        self.palette = num_classes <= MAX_PALETTE_CLASSES
        self.rows: dict[int, list[tuple[int, str]]] = defaultdict(list)
        self._palette = voc_palette()

    def _stem(self, loader: int) -> str:
        return self.path.stem + (f"_{loader}" if loader else "")

    def csv_path(self, loader: int) -> Path:
        rank = f"_rank{self.rank}" if self.world_size > 1 else ""
        return self.path.with_name(self._stem(loader) + rank + (self.path.suffix or ".csv"))

    def masks_dir(self, loader: int) -> Path:
        name = f"{self.path.stem}_masks" + (f"_{loader}" if loader else "")
        return self.path.with_name(name)

    def add(self, loader: int, index: Tensor | None, outputs: Mapping[str, Tensor]) -> None:
        masks = outputs["prediction"].detach().cpu().numpy()  # sync point (predict only)
        rows = self.rows[loader]
        if index is None:  # a dataset without indices: number the samples in order
            indices = list(range(len(rows), len(rows) + len(masks)))
        else:
            indices = [int(i) for i in index.tolist()]
        folder = self.masks_dir(loader)
        folder.mkdir(parents=True, exist_ok=True)
        for i, mask in zip(indices, masks, strict=True):
            target = folder / f"{i}.png"
            self._save(mask, target)
            rows.append((i, f"{folder.name}/{target.name}"))

    def _save(self, mask: np.ndarray, target: Path) -> None:
        from PIL import Image

        if self.palette:
            image = Image.fromarray(mask.astype(np.uint8))
            image.putpalette(self._palette)  # turns the "L" image into a "P" one
        else:
            image = Image.fromarray(mask.astype(np.uint16))
        image.save(target)

    def write(self) -> Path:
        """Write the CSV index of every loader; returns the first CSV's path."""
        written = []
        for loader in sorted(self.rows) or [0]:
            target = self.csv_path(loader)
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["index", "mask_path"])
                writer.writerows(sorted(self.rows[loader]))
            written.append(target)
        return written[0]
