"""ImageSegmentationDataset: a CSV of image paths and mask paths."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from okc.data.annotations import read_table
from okc.data.datasets.base import (
    ImageDataset,
    InputDtype,
    TargetDtype,
    annotation_file,
    drop_missing,
    root_folder,
    to_dtype,
)
from okc.data.io import CorruptSampleError, ImageFormat
from okc.errors import ParamError
from okc.registry import DATASETS


@DATASETS.register
class ImageSegmentationDataset(ImageDataset):
    """Images and single-channel label masks (PNG, class index per pixel) listed in a CSV.

    Samples hold ``mask`` (int64 H,W), which follows geometric augmentations. Paths are relative to
    ``data_folder``; so is ``annotation_path`` unless absolute.

    With ``num_classes`` set, every mask is checked as it is read: a value outside
    ``[0, num_classes)`` that is not ``ignore_index`` is an error naming the mask file and its CSV
    line (a ``CorruptSampleError``, so ``skip_corrupt`` skips such samples instead). Without it a
    bad value surfaces only in the loss, which cannot say which file held it.
    """

    def __init__(
        self,
        *,
        data_folder: str = "",
        annotation_path: str | None = None,
        input_column: str = "image_path",
        target_column: str = "mask_path",
        target_dtype: TargetDtype = "int64",
        csv_path: str | None = None,
        input_dtype: InputDtype = "float32",
        image_format: ImageFormat = "rgb",
        rgba_layout_color: int | Sequence[int] = 0,
        test_mode: bool = False,
        reader_library: str | None = None,
        skip_corrupt: bool = False,
        num_classes: int | None = None,
        ignore_index: int | None = None,
    ) -> None:
        if num_classes is not None and num_classes < 1:
            raise ParamError("num_classes", f"must be at least 1, got {num_classes}")
        if ignore_index is not None and num_classes is None:
            raise ParamError(
                "ignore_index", "only checks masks together with num_classes; set both"
            )
        self.num_classes, self.ignore_index = num_classes, ignore_index
        super().__init__(
            input_dtype=input_dtype,
            image_format=image_format,
            rgba_layout_color=rgba_layout_color,
            test_mode=test_mode,
            reader_library=reader_library,
            skip_corrupt=skip_corrupt,
        )
        folder = root_folder(data_folder)
        columns = [input_column] if test_mode else [input_column, target_column]
        self.table = read_table(annotation_file(folder, annotation_path, csv_path), columns)
        self.paths = [str(folder / p) for p in self.table[input_column]]
        self.mask_paths = (
            None if test_mode else [str(folder / p) for p in self.table[target_column]]
        )
        self.target_dtype = to_dtype(target_dtype)
        self.rows: Sequence[int] = range(len(self.paths))
        if skip_corrupt:
            keep = set(drop_missing(self.paths, self.where))
            if self.mask_paths is not None:
                keep &= set(drop_missing(self.mask_paths, self.where))
            self.rows = sorted(keep)

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, row: int) -> str:
        return self.table.where(row)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        image = self._image(self.paths[row], row)
        sample = {"image": image, "index": index}
        if self.mask_paths is not None:
            mask = self._mask(self.mask_paths[row], row)
            if mask.shape != image.shape[1:]:
                raise CorruptSampleError(
                    f"mask {self.mask_paths[row]} is {tuple(mask.shape)}, its image "
                    f"{tuple(image.shape[1:])} ({self.where(row)})",
                    path=self.mask_paths[row],
                )
            if self.num_classes is not None:
                check_mask_values(
                    mask, self.num_classes, self.ignore_index,
                    where=f"mask {self.mask_paths[row]} ({self.where(row)})",
                    path=self.mask_paths[row],
                )  # fmt: skip
            sample["mask"] = mask.to(self.target_dtype)
        return sample


def check_mask_values(
    mask: torch.Tensor, num_classes: int, ignore_index: int | None, *, where: str, path: str
) -> None:
    """Raise a ``CorruptSampleError`` naming ``where`` for class values outside the label set."""
    bad = (mask < 0) | (mask >= num_classes)
    if ignore_index is not None:
        bad &= mask != ignore_index
    if not bad.any():
        return
    values = mask[bad].unique().tolist()
    shown = ", ".join(map(str, values[:5])) + (", ..." if len(values) > 5 else "")
    allowed = f"0..{num_classes - 1}" + (f" or {ignore_index}" if ignore_index is not None else "")
    raise CorruptSampleError(
        f"{where} holds values {shown} where {allowed} are expected (num_classes "
        f"{num_classes}); fix the mask, or set num_classes/ignore_index to match the labels",
        path=path,
    )
