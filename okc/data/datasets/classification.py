"""ImageClassificationDataset: a CSV of image paths and labels (multiclass or multilabel)."""

from __future__ import annotations

import re
from typing import Any

import attrs
import torch

from okc.data.annotations import Table
from okc.data.datasets.base import CsvDataset, CsvSource, TargetDtype, to_dtype
from okc.errors import OkcError, ParamError
from okc.registry import DATASETS

_INT = re.compile(r"\d+")


@DATASETS.register
class ImageClassificationDataset(CsvDataset):
    """Images listed in a CSV with a label column (TorchOk's format).

    Multiclass labels are integers; multilabel ones any string of integers (``"0 3"``, ``"0,3"``)
    turned into a float multi-hot of length ``num_classes``. Image paths are relative to
    ``data_folder``; so is ``annotation_path`` unless absolute.
    """

    @attrs.frozen(kw_only=True)
    class Params(CsvSource):
        num_classes: int | None = None
        target_column: str = "label"
        target_dtype: TargetDtype | None = None
        multilabel: bool = False

        def __attrs_post_init__(self) -> None:
            if self.multilabel and self.num_classes is None:
                raise ParamError("num_classes", "multilabel needs num_classes")

    def load(self, p: Params) -> None:
        self._read(p, [p.target_column])
        self.targets: torch.Tensor | None = None
        if not self.test_mode:
            dtype = to_dtype(p.target_dtype or ("float32" if p.multilabel else "long"))
            parse = _multi_hot if p.multilabel else _labels
            self.targets = parse(self.table, p.target_column, p.num_classes).to(dtype)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row, sample = self._first(index)
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
