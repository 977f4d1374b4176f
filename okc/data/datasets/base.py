"""What every okc dataset shares: the sample contract and TorchOk's common parameters.

``dataset[i]`` returns a dict: ``image`` (uint8 C,H,W), the task's targets (``target``: int64
class or float multi-hot; ``mask``: int64 H,W for segmentation; ``bboxes`` float32 (N,4) xyxy
pixels with ``label`` int64 (N,) for detection; ...) and ``index``. The rest is the pipeline's
work: size-fixing transforms per sample on the CPU, then augmentation, normalization and the cast
to ``input_dtype`` on the batch, on the device. Datasets hold no transforms themselves.

Two class attributes declare the sample's shape to the pipeline:

- ``image_keys``: the keys holding images. Triplet datasets hold three (``anchor``,
  ``positive``, ``negative``); each gets its own transform and its own augmentation draw. Label
  maps (``mask``, ``instances``) and boxes belong to the first one.
- ``ragged_keys``: keys whose tensors vary in their first dim from sample to sample (boxes and
  their labels); a batch holds them as a list with one tensor per sample.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import attrs
import torch

from okc.data.io import CorruptSampleError, ImageFormat, ImageReadError, read_image, read_mask
from okc.errors import OkcError

InputDtype = Literal["float32", "float16", "bfloat16", "float64"]
TargetDtype = Literal["long", "int64", "int32", "float32", "float", "float16", "bfloat16"]

_DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "long": torch.int64,
    "int64": torch.int64,
    "int32": torch.int32,
}


@runtime_checkable
class ReadsBatches(Protocol):
    """A dataset that reads a whole batch at once: ``__getitems__(indices)`` returns what
    ``collate`` would make of ``[dataset[i] for i in indices]`` (torch's batched-fetch name).
    The pipeline uses it when no per-sample op has to run between reading and batching."""

    def __getitems__(self, indices: list[int]) -> dict[str, Any]: ...


@attrs.frozen
class SampleSpec:
    """What the pipeline needs to know of a dataset's samples (see the module docstring)."""

    image_keys: tuple[str, ...] = ("image",)
    ragged_keys: tuple[str, ...] = ()
    input_dtype: torch.dtype = torch.float32
    skip_corrupt: bool = False
    min_area: float = 0.0  # boxes augmentation leaves this small are dropped (okc.data.ops)
    min_visibility: float = 0.0  # ... and boxes with this fraction or less still in the image
    reads_batches: bool = False  # ``__getitems__(indices)`` gives a collated batch (in memory)

    @classmethod
    def of(cls, dataset: object) -> SampleSpec:
        """An ``ImageDataset``'s declarations; any other dataset gets the defaults."""
        if not isinstance(dataset, ImageDataset):
            return cls()
        return cls(
            tuple(dataset.image_keys), tuple(dataset.ragged_keys), dataset.input_dtype,
            dataset.skip_corrupt, dataset.min_area, dataset.min_visibility,
            isinstance(dataset, ReadsBatches),
        )  # fmt: skip


def to_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype '{name}'; use one of {', '.join(_DTYPES)}") from None


class ImageDataset:
    """Base of okc's datasets: holds the common parameters and reads files with good errors.

    Args:
        input_dtype: dtype of ``image`` after the on-device transform (the pipeline applies it).
        image_format: channels of ``image``: rgb, bgr, rgba or gray.
        rgba_layout_color: colour that transparent pixels are composited over (unless rgba).
        test_mode: drop targets (prediction on unlabelled data).
        reader_library: accepted for TorchOk configs; okc always decodes with torchvision/PIL.
        skip_corrupt: skip samples whose files are missing or corrupt (warned and counted) instead
            of failing.
    """

    skip_corrupt: bool = False
    image_keys: ClassVar[tuple[str, ...]] = ("image",)
    ragged_keys: ClassVar[tuple[str, ...]] = ()
    min_area: float = 0.0  # detection datasets: which boxes augmentation drops (okc.data.ops)
    min_visibility: float = 0.0

    def __init__(
        self,
        *,
        input_dtype: InputDtype = "float32",
        image_format: ImageFormat = "rgb",
        rgba_layout_color: int | Sequence[int] = 0,
        test_mode: bool = False,
        reader_library: str | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        if image_format not in ("rgb", "bgr", "rgba", "gray"):
            raise ValueError(f"image_format must be rgb, bgr, rgba or gray, not '{image_format}'")
        self.input_dtype = to_dtype(input_dtype)
        if not self.input_dtype.is_floating_point:
            raise ValueError(f"input_dtype must be a float type, not '{input_dtype}'")
        self.image_format = image_format
        self.rgba_layout_color = rgba_layout_color
        self.test_mode = test_mode
        self.skip_corrupt = skip_corrupt
        del reader_library

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def where(self, row: int) -> str:
        """Where sample ``row`` comes from, for error messages (a CSV line, a file)."""
        return f"sample {row}"

    def _image(self, path: str, row: int) -> torch.Tensor:
        try:
            return read_image(
                path, image_format=self.image_format, layout_color=self.rgba_layout_color
            )
        except ImageReadError as err:
            raise CorruptSampleError(f"{err} ({self.where(row)})", path=path) from err

    def _mask(self, path: str, row: int) -> torch.Tensor:
        try:
            return read_mask(path)
        except ImageReadError as err:
            raise CorruptSampleError(f"{err} ({self.where(row)})", path=path) from err


def data_folder(folder: str | os.PathLike[str], *, what: str = "data folder") -> Path:
    """An existing folder, or an error saying which one is missing."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise OkcError(f"{what} does not exist: {path}")
    return path


def drop_missing(paths: Sequence[str], describe: Any) -> list[int]:
    """Indices of ``paths`` that exist; warns with the count of those that do not.

    ``describe(i)`` says where row ``i`` comes from, for the warning.
    """
    exists = [os.path.isfile(p) for p in paths]
    missing = [i for i, ok in enumerate(exists) if not ok]
    if missing:
        examples = "; ".join(f"{paths[i]} ({describe(i)})" for i in missing[:3])
        warnings.warn(
            f"skip_corrupt: skipping {len(missing)} of {len(paths)} samples whose files are "
            f"missing, e.g. {examples}",
            stacklevel=3,
        )
    return [i for i, ok in enumerate(exists) if ok]


def root_folder(folder: str) -> Path:
    """``data_folder`` of a CSV dataset: must exist when set; the working directory when empty."""
    return data_folder(folder) if folder else Path.cwd()


def annotation_file(folder: Path, annotation_path: str | None, csv_path: str | None) -> Path:
    """TorchOk's rule: the annotation path is relative to ``data_folder`` (absolute paths win)."""
    if csv_path is not None:
        warnings.warn(
            "csv_path is deprecated; use annotation_path", DeprecationWarning, stacklevel=3
        )
        annotation_path = annotation_path or csv_path
    if annotation_path is None:
        raise ValueError("annotation_path is not set")
    return folder / Path(annotation_path).expanduser()
