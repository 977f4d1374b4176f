"""Datasets of two views per image, for contrastive self-supervised tasks (``SimCLRTask``).

A sample holds the same uint8 image twice, as ``image_0`` and ``image_1`` (TorchOk's keys). The
views become different on the device: the pipeline augments each image key of a batch with its
own random draw (``okc.data.pipeline``), so the two views of an image are two draws of the
experiment's ``augment``, made on whole batches. TorchOk augmented each view per sample, with
albumentations, in the loader workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from okc.data.annotations import read_table
from okc.data.datasets.base import (
    ImageDataset,
    InputDtype,
    annotation_file,
    drop_missing,
    root_folder,
)
from okc.data.datasets.shapes import Shapes
from okc.data.io import ImageFormat
from okc.registry import DATASETS

VIEWS = ("image_0", "image_1")


@DATASETS.register
class UnsupervisedContrastiveDataset(ImageDataset):
    """Unlabelled images listed in a CSV column (TorchOk's dataset for SimCLR).

    Sample keys: ``image_0``, ``image_1`` (the image, twice: see the module docstring), ``index``.
    Image paths are relative to ``data_folder``; so is ``annotation_path`` unless absolute.
    """

    image_keys: ClassVar[tuple[str, ...]] = VIEWS

    def __init__(
        self,
        *,
        annotation_path: str,
        data_folder: str = "",
        input_column: str = "image_path",
        input_dtype: InputDtype = "float32",
        image_format: ImageFormat = "rgb",
        rgba_layout_color: int | Sequence[int] = 0,
        reader_library: str | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__(
            input_dtype=input_dtype,
            image_format=image_format,
            rgba_layout_color=rgba_layout_color,
            reader_library=reader_library,
            skip_corrupt=skip_corrupt,
        )
        folder = root_folder(data_folder)
        self.table = read_table(annotation_file(folder, annotation_path, None), [input_column])
        self.paths = [str(folder / p) for p in self.table[input_column]]
        self.rows = drop_missing(self.paths, self.where) if skip_corrupt else range(len(self.paths))

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, row: int) -> str:
        return self.table.where(row)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        image = self._image(self.paths[row], row)
        return {VIEWS[0]: image, VIEWS[1]: image, "index": index}


@DATASETS.register
class ContrastiveShapes(Shapes):
    """Shapes without labels, each image as two views (``image_0``, ``image_1``), ``index``:
    the offline dataset of ``experiments/shapes_simclr.yml``. Params as for ``Shapes``."""

    image_keys: ClassVar[tuple[str, ...]] = VIEWS

    def __init__(
        self,
        *,
        num_samples: int = 1000,
        image_size: int = 32,
        num_classes: int = 10,
        noise: float = 12.0,
        seed: int = 0,
        split: Literal["train", "valid", "test"] = "train",
        train: bool | None = None,
        input_dtype: InputDtype = "float32",
    ) -> None:
        super().__init__(
            num_samples=num_samples, image_size=image_size, num_classes=num_classes, noise=noise,
            seed=seed, split=split, train=train, input_dtype=input_dtype, test_mode=True,
        )  # fmt: skip

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = super().__getitem__(index)["image"]
        return {VIEWS[0]: image, VIEWS[1]: image, "index": index}
