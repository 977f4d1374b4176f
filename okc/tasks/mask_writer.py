"""``okc predict`` output for segmentation: one PNG mask per image and a CSV index of them.

Each PNG holds the predicted class index of every pixel, at the size the model saw (after the
dataset's ``transform`` resizes). Up to 256 classes it is a palette PNG: any image viewer shows
the classes in distinct colours (PASCAL VOC's colour map, class 0 black) while the pixel values
stay the class indices, which ``PIL`` (``np.array(Image.open(p))``) and okc's own mask reader
give back. More classes are written as 16-bit grayscale PNGs.

Files: ``<stem>.csv`` with columns ``index`` (the dataset index) and ``mask_path`` (relative to the
CSV's folder), and the masks in ``<stem>_masks/<index>.png``. With several PREDICT loaders, loader
``k`` writes ``<stem>_<k>.csv`` (the default writer's naming) and its masks in ``<stem>_masks_<k>/``
(``<stem>_masks/`` for loader 0); under several processes each rank writes its own CSV
(``_rank<r>``) beside shared mask folders (ranks predict disjoint indices). PNGs are written as
batches arrive, so no prediction is held in memory.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from okc.tasks.predictions import PredictionWriter

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


class MaskWriter(PredictionWriter):
    """Writes ``outputs['prediction']`` (B, H, W) class indices as PNGs (see the module doc)."""

    def __init__(
        self, path: str | Path, *, rank: int = 0, world_size: int = 1, num_classes: int = 256
    ) -> None:
        super().__init__(path, rank=rank, world_size=world_size)
        self.palette = voc_palette() if num_classes <= MAX_PALETTE_CLASSES else None

    def masks_dir(self, loader: int) -> Path:
        """Known before the first batch (unlike the CSV's name, which depends on how many
        loaders there were), since masks are written as they come."""
        name = f"{self.path.stem}_masks" + (f"_{loader}" if loader else "")
        return self.path.with_name(name)

    def add(self, loader: int, index: Tensor | None, columns: Mapping[str, Any]) -> None:
        masks = columns["prediction"].detach().cpu().numpy()  # sync point (predict only)
        part = self.parts[loader]
        if index is None:  # a dataset without indices: number the samples in order
            indices = list(range(len(part["index"]), len(part["index"]) + len(masks)))
        else:
            indices = [int(i) for i in index.tolist()]
        folder = self.masks_dir(loader)
        folder.mkdir(parents=True, exist_ok=True)
        for i, mask in zip(indices, masks, strict=True):
            target = folder / f"{i}.png"
            self._save(mask, target)
            part["index"].append(i)
            part["mask_path"].append(f"{folder.name}/{target.name}")

    def _save(self, mask: np.ndarray, target: Path) -> None:
        from PIL import Image

        if self.palette is None:
            Image.fromarray(mask.astype(np.uint16)).save(target)
            return
        image = Image.fromarray(mask.astype(np.uint8))
        image.putpalette(self.palette)  # turns the "L" image into a "P" one
        image.save(target)

    def write(self) -> Path:
        """Write the CSV index of every loader; returns the first CSV's path."""
        written = []
        for loader in sorted(self.parts) or [0]:
            part = self.parts[loader]
            target = self.target(loader)
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["index", "mask_path"])
                writer.writerows(sorted(zip(part["index"], part["mask_path"], strict=True)))
            written.append(target)
        return written[0]
