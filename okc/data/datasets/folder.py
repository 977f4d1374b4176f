"""ImageFolder: one sub-folder per class (``root/<class>/*.jpg``), no annotation file needed.

This is how real data is used offline, e.g. the CIFAR-10 JPEG archive unpacked as
``train/<class>/NNNN.jpg``; ``archive`` unpacks a .tar(.gz) into ``data_folder`` on first use.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import attrs
import torch

from okc.data.datasets.base import ImageDataset, ImageSource
from okc.errors import OkcError
from okc.registry import DATASETS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


@DATASETS.register
class ImageFolder(ImageDataset):
    """Images under ``data_folder[/split]/<class>/``; classes are the sorted sub-folder names.

    Args:
        split: a sub-folder of ``data_folder`` to read (``train``, ``test``).
        classes: the class names, in label order (default: every sub-folder, sorted); a subset
            leaves the other folders out.
        extensions: file endings that count as images (case-insensitive).
        archive: a .tar / .tar.gz unpacked into ``data_folder`` when that folder does not exist.
        test_mode: no targets; a folder without class sub-folders is then read flat.
    """

    @attrs.frozen(kw_only=True)
    class Params(ImageSource):
        data_folder: str
        split: str | None = None
        classes: tuple[str, ...] | None = None
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS
        archive: str | None = None

    def load(self, p: Params) -> None:
        folder = Path(p.data_folder).expanduser()
        if p.archive is not None and not folder.exists():
            unpack(Path(p.archive).expanduser(), folder)
        root = folder / p.split if p.split else folder
        if not root.is_dir():
            raise OkcError(f"image folder does not exist: {root}")
        suffixes = tuple(e.lower() for e in p.extensions)
        found = sorted(e.name for e in os.scandir(root) if e.is_dir())
        self.classes = list(p.classes) if p.classes is not None else found
        if not self.classes and not self.test_mode:
            raise OkcError(f"{root} has no class sub-folders (expected {root}/<class>/<image>)")
        for name in set(self.classes) - set(found):
            raise OkcError(f"{root} has no folder for class '{name}'")
        if self.classes:
            self.paths, labels = [], []
            for label, name in enumerate(self.classes):
                files = _images(root / name, suffixes)
                self.paths += files
                labels += [label] * len(files)
        else:
            self.paths, labels = _images(root, suffixes), []
        if not self.paths:
            raise OkcError(f"no images ({', '.join(suffixes)}) under {root}")
        self.targets = None if self.test_mode or not labels else torch.tensor(labels)
        self._keep_existing()

    def where(self, row: int) -> str:
        return f"sample {row} of ImageFolder"

    def __getitem__(self, index: int) -> dict[str, Any]:
        row, sample = self._first(index)
        if self.targets is not None:
            sample["target"] = self.targets[row]
        return sample


def _images(folder: Path, suffixes: tuple[str, ...]) -> list[str]:
    return sorted(
        e.path for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(suffixes)
    )


def unpack(archive: Path, folder: Path) -> None:
    """Unpack ``archive`` into ``folder`` safely (no paths outside it, no devices or links out)."""
    if not archive.is_file():
        raise OkcError(f"archive not found: {archive}")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted unpack
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(partial, filter="data")
    except (tarfile.TarError, OSError) as err:
        raise OkcError(f"cannot unpack {archive}: {err}") from err
    os.replace(partial, folder)
