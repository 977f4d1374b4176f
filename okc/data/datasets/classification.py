"""ImageClassificationDataset: a CSV of image paths and labels (multiclass or multilabel)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from okc.data.annotations import Table, read_table
from okc.data.datasets.base import (
    ImageDataset,
    InputDtype,
    TargetDtype,
    annotation_file,
    drop_missing,
    root_folder,
    to_dtype,
)
from okc.data.io import ImageFormat
from okc.errors import OkcError
from okc.registry import DATASETS

_INT = re.compile(r"\d+")


@DATASETS.register
class ImageClassificationDataset(ImageDataset):
    """Images listed in a CSV with a label column (TorchOk's format).

    Multiclass labels are integers; multilabel ones any string of integers (``"0 3"``, ``"0,3"``)
    turned into a float multi-hot of length ``num_classes``. Image paths are relative to
    ``data_folder``; so is ``annotation_path`` unless absolute.
    """

    def __init__(
        self,
        *,
        data_folder: str = "",
        annotation_path: str | None = None,
        num_classes: int | None = None,
        input_column: str = "image_path",
        target_column: str = "label",
        target_dtype: TargetDtype | None = None,
        multilabel: bool = False,
        lazy_init: bool = False,
        csv_path: str | None = None,
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
        del lazy_init  # TorchOk deferred reading the CSV; reading columns is cheap here
        if multilabel and num_classes is None:
            raise ValueError("multilabel needs num_classes")
        folder = root_folder(data_folder)
        columns = [input_column] if test_mode else [input_column, target_column]
        self.table: Table = read_table(annotation_file(folder, annotation_path, csv_path), columns)
        self.paths = [str(folder / p) for p in self.table[input_column]]
        self.targets: torch.Tensor | None = None
        if not test_mode:
            dtype = to_dtype(target_dtype or ("float32" if multilabel else "long"))
            parse = _multi_hot if multilabel else _labels
            self.targets = parse(self.table, target_column, num_classes).to(dtype)
        self.rows = drop_missing(self.paths, self.where) if skip_corrupt else range(len(self.paths))

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, row: int) -> str:
        return self.table.where(row)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        sample = {"image": self._image(self.paths[row], row), "index": index}
        if self.targets is not None:
            sample["target"] = self.targets[row]
        return sample


def _labels(table: Table, column: str, num_classes: int | None) -> torch.Tensor:
    labels = []
    for row, value in enumerate(table[column]):
        try:
            labels.append(int(value))
        except ValueError:
            raise OkcError(f"{table.where(row)}: label '{value}' is not an integer") from None
        if labels[-1] < 0 or (num_classes is not None and labels[-1] >= num_classes):
            allowed = f"0..{num_classes - 1}" if num_classes else "0 or more"
            raise OkcError(f"{table.where(row)}: label {value} is not in {allowed}")
    return torch.tensor(labels, dtype=torch.int64)


def _multi_hot(table: Table, column: str, num_classes: int | None) -> torch.Tensor:
    assert num_classes is not None
    hot = torch.zeros(len(table), num_classes)
    for row, value in enumerate(table[column]):
        for label in map(int, _INT.findall(value)):
            if label >= num_classes:
                raise OkcError(f"{table.where(row)}: label {label} is outside 0..{num_classes - 1}")
            hot[row, label] = 1
    return hot
