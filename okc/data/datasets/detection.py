"""Detection samples, and TorchOk's CSV detection format (``DetectionDataset``).

A detection sample holds ``image`` (uint8 C,H,W), ``bboxes`` (N, 4) xyxy in the image's pixels,
``label`` (N,), ``orig_img_shape`` (H, W, C, as TorchOk) and ``index``. Boxes are converted from
the file's format (``coco`` x,y,w,h; ``pascal_voc`` x1,y1,x2,y2; ``yolo`` normalised cx,cy,w,h;
``albumentations`` normalised x1,y1,x2,y2) with torchvision's ``box_convert`` — TorchOk converted
only COCO's — then clipped to the image; boxes with nothing left inside it are dropped (with their
labels), as albumentations' filter did. An image with no boxes is a sample with N = 0: it trains
the background.

``min_area`` and ``min_visibility`` are read by the pipeline: after every geometric augmentation a
box is dropped when its area is at most ``min_area`` pixels, or the fraction of it still in the
image is at most ``min_visibility`` (see ``okc.data.ops``).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import attrs
import torch
from torch import Tensor
from torchvision.ops import box_convert

from okc.data.datasets.base import (
    CsvDataset,
    CsvSource,
    ImageDataset,
    InputDtype,
    TargetDtype,
    to_dtype,
)
from okc.data.io import CorruptSampleError
from okc.errors import OkcError, ParamError
from okc.registry import DATASETS

BoxFormat = Literal["coco", "pascal_voc", "yolo", "albumentations"]
_NORMALISED = ("yolo", "albumentations")


def to_xyxy(boxes: Tensor, box_format: str, height: int, width: int) -> Tensor:
    """(N, 4) boxes of ``box_format`` as xyxy pixels of a ``height`` x ``width`` image."""
    boxes = boxes.reshape(-1, 4).float()
    if box_format in _NORMALISED:
        boxes = boxes * boxes.new_tensor([width, height, width, height])
    if box_format == "coco":
        return box_convert(boxes, "xywh", "xyxy")
    if box_format == "yolo":
        return box_convert(boxes, "cxcywh", "xyxy")
    return boxes


def clip_and_filter(
    boxes: Tensor, labels: Tensor, height: int, width: int
) -> tuple[Tensor, Tensor]:
    """Boxes clipped to the image, without those that have no area left (and their labels)."""
    boxes = boxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], labels[keep]


@attrs.frozen(kw_only=True, slots=False)  # a mixin: one slotted base per Params
class BoxOptions:
    """The box params of detection datasets.

    Args:
        bbox_dtype, target_dtype: dtypes of ``bboxes`` and ``label``.
        min_area, min_visibility: which boxes augmentation drops (see the module docstring).
    """

    bbox_dtype: Literal[InputDtype, "float"] = "float32"
    target_dtype: TargetDtype = "long"
    min_area: float = 0.0
    min_visibility: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.min_area < 0:
            raise ParamError("min_area", f"must be at least 0, got {self.min_area}")
        if not 0 <= self.min_visibility <= 1:
            raise ParamError("min_visibility", f"must be in 0..1, got {self.min_visibility}")


class BoxDataset(ImageDataset):
    """What detection datasets share: box conversion, validation and the sample's keys."""

    ragged_keys: ClassVar[tuple[str, ...]] = ("bboxes", "label")

    def _box_options(self, p: BoxOptions) -> None:
        self.bbox_dtype, self.target_dtype = to_dtype(p.bbox_dtype), to_dtype(p.target_dtype)
        self.min_area, self.min_visibility = p.min_area, p.min_visibility

    def _sample(
        self, index: int, image: Tensor, boxes: Tensor | None, labels: Tensor | None,
        box_format: str, row: int,
    ) -> dict[str, Any]:  # fmt: skip
        channels, height, width = image.shape
        sample: dict[str, Any] = {
            "image": image,
            "index": index,
            "orig_img_shape": torch.tensor([height, width, channels]),
        }
        if self.test_mode or boxes is None or labels is None:
            return sample
        xyxy = to_xyxy(boxes, box_format, height, width)
        if ((xyxy[:, 2:] - xyxy[:, :2]) < 0).any():
            bad = int(((xyxy[:, 2:] - xyxy[:, :2]) < 0).any(-1).nonzero()[0])
            raise CorruptSampleError(
                f"box {bad} {boxes[bad].tolist()} ({box_format}) has a negative width or height "
                f"({self.where(row)})",
                path=self.where(row),
            )
        xyxy, labels = clip_and_filter(xyxy, labels, height, width)
        sample["bboxes"] = xyxy.to(self.bbox_dtype)
        sample["label"] = labels.to(self.target_dtype)
        return sample


def _parse_list(text: str, what: str, where: str) -> list[Any]:
    try:
        value = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as err:
        raise OkcError(f"{where}: {what} is not a JSON list ({err.msg}): {text[:60]!r}") from None
    if not isinstance(value, list):
        raise OkcError(f"{where}: {what} is not a JSON list: {text[:60]!r}")
    return value


@DATASETS.register
class DetectionDataset(BoxDataset, CsvDataset):
    """Images with boxes and labels listed in a CSV (TorchOk's format).

    .. csv-table::
        :header: image_path, bbox, label

        image1.png, "[[217.6, 240.5, 38.9, 57.7], [1.0, 240.2, 346.6, 186.7]]", "[0, 1]"
        image2.png, "[]", "[]"

    Args:
        data_folder: folder the image paths (and ``annotation_path``) are relative to.
        annotation_path: the CSV (TorchOk's pandas pickles are refused: they run code).
        input_column, bbox_column, target_column: the CSV's columns.
        bbox_format: coco, pascal_voc, yolo or albumentations (see the module docstring).
        bbox_dtype, target_dtype, min_area, min_visibility: see ``BoxOptions``.
        filter_bboxes_on_start: clip and filter every row's boxes when the dataset is built
            (reading each image's size from its header) instead of per sample.
    """

    @attrs.frozen(kw_only=True)
    class Params(CsvSource, BoxOptions):
        bbox_column: str = "bbox"
        target_column: str = "label"
        bbox_format: BoxFormat = "coco"
        filter_bboxes_on_start: bool = False

    def load(self, p: Params) -> None:
        self._box_options(p)
        self.bbox_format: str = p.bbox_format
        self._read(p, [p.bbox_column, p.target_column])
        self.boxes: list[Tensor] = []
        self.labels: list[Tensor] = []
        if not self.test_mode:
            for row in range(len(self.paths)):
                boxes, labels = self._parse_row(row, p.bbox_column, p.target_column)
                self.boxes.append(boxes)
                self.labels.append(labels)
        if p.filter_bboxes_on_start and not self.test_mode:
            self._filter_on_start()

    def _parse_row(self, row: int, bbox_column: str, target_column: str) -> tuple[Tensor, Tensor]:
        where = self.where(row)
        boxes = _parse_list(self.table[bbox_column][row], f"column '{bbox_column}'", where)
        labels = _parse_list(self.table[target_column][row], f"column '{target_column}'", where)
        if len(boxes) != len(labels):
            raise OkcError(f"{where}: {len(boxes)} boxes but {len(labels)} labels")
        if any(not isinstance(b, list) or len(b) != 4 for b in boxes):
            raise OkcError(f"{where}: column '{bbox_column}' must hold boxes of 4 numbers")
        try:
            return (
                torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                torch.tensor(labels, dtype=torch.long),
            )
        except (TypeError, ValueError) as err:
            raise OkcError(f"{where}: boxes and labels must be numbers ({err})") from None

    def _filter_on_start(self) -> None:
        from PIL import Image

        for row in self.rows:
            with Image.open(self.paths[row]) as im:  # reads the header only
                width, height = im.size
            xyxy = to_xyxy(self.boxes[row], self.bbox_format, height, width)
            self.boxes[row], self.labels[row] = clip_and_filter(
                xyxy, self.labels[row], height, width
            )
        self.bbox_format = "pascal_voc"  # now stored as xyxy pixels

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        image = self._image(self.paths[row], row)
        boxes = None if self.test_mode else self.boxes[row]
        labels = None if self.test_mode else self.labels[row]
        return self._sample(index, image, boxes, labels, self.bbox_format, row)
