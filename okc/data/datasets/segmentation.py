"""ImageSegmentationDataset: a CSV of image paths and mask paths."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from okc.data.datasets.base import CsvDataset, CsvSource, TargetDtype, drop_missing, to_dtype
from okc.data.io import CorruptSampleError
from okc.errors import ParamError
from okc.registry import DATASETS


@attrs.frozen(kw_only=True, slots=False)  # a mixin: one slotted base per Params
class MaskLabels:
    """The mask params of segmentation datasets.

    Args:
        target_dtype: dtype of ``mask``.
        num_classes: with it, every mask is checked as it is read (see ``check_mask_values``).
        ignore_index: a mask value outside ``0..num_classes-1`` that is allowed (needs
            ``num_classes``).
    """

    target_dtype: TargetDtype = "int64"
    num_classes: int | None = None
    ignore_index: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.num_classes is not None and self.num_classes < 1:
            raise ParamError("num_classes", f"must be at least 1, got {self.num_classes}")
        if self.ignore_index is not None and self.num_classes is None:
            raise ParamError(
                "ignore_index", "only checks masks together with num_classes; set both"
            )


@DATASETS.register
class ImageSegmentationDataset(CsvDataset):
    """Images and single-channel label masks (PNG, class index per pixel) listed in a CSV.

    Samples hold ``mask`` (int64 H,W), which follows geometric augmentations. Paths are relative to
    ``data_folder``; so is ``annotation_path`` unless absolute.

    With ``num_classes`` set, every mask is checked as it is read: a value outside
    ``[0, num_classes)`` that is not ``ignore_index`` is an error naming the mask file and its CSV
    line (a ``CorruptSampleError``, so ``skip_corrupt`` skips such samples instead). Without it a
    bad value surfaces only in the loss, which cannot say which file held it.
    """

    @attrs.frozen(kw_only=True)
    class Params(CsvSource, MaskLabels):
        target_column: str = "mask_path"

    def load(self, p: Params) -> None:
        self.num_classes, self.ignore_index = p.num_classes, p.ignore_index
        self.target_dtype = to_dtype(p.target_dtype)
        folder = self._read(p, [p.target_column])
        self.mask_paths = (
            None if self.test_mode else [str(folder / m) for m in self.table[p.target_column]]
        )
        if self.skip_corrupt and self.mask_paths is not None:
            self.rows = sorted(set(self.rows) & set(drop_missing(self.mask_paths, self.where)))

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
