"""ImageFolder: one sub-folder per class (``root/<class>/*.jpg``), no annotation file needed.

This is how real data is used offline, e.g. the CIFAR-10 JPEG archive unpacked as
``train/<class>/NNNN.jpg``; ``archive`` unpacks a .tar(.gz) into ``data_folder`` on first use.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from okc.data.datasets.base import ImageDataset, InputDtype, drop_missing
from okc.data.io import ImageFormat
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

    def __init__(
        self,
        *,
        data_folder: str,
        split: str | None = None,
        classes: Sequence[str] | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        archive: str | None = None,
        input_dtype: InputDtype = "float32",
        image_format: ImageFormat = "rgb",
        rgba_layout_color: int | Sequence[int] = 0,
        test_mode: bool = False,
        reader_library: str | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__(
            input_dtype=input_dtype,
            image_format=image_format,
            rgba_layout_color=rgba_layout_color,
            test_mode=test_mode,
            reader_library=reader_library,
            skip_corrupt=skip_corrupt,
        )
        folder = Path(data_folder).expanduser()
        if archive is not None and not folder.exists():
            unpack(Path(archive).expanduser(), folder)
        root = folder / split if split else folder
        if not root.is_dir():
            raise OkcError(f"image folder does not exist: {root}")
        suffixes = tuple(e.lower() for e in extensions)
        found = sorted(e.name for e in os.scandir(root) if e.is_dir())
        self.classes = list(classes) if classes is not None else found
        if not self.classes and not test_mode:
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
        self.targets = None if test_mode or not labels else torch.tensor(labels)
        self.rows = drop_missing(self.paths, self.where) if skip_corrupt else range(len(self.paths))

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, row: int) -> str:
        return f"sample {row} of ImageFolder"

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        sample = {"image": self._image(self.paths[row], row), "index": index}
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
