"""What every okc dataset shares: its params, the sample contract, and reading files.

``dataset[i]`` returns a dict: ``image`` (uint8 C,H,W), the task's targets (``target``: int64
class or float multi-hot; ``mask``: int64 H,W for segmentation; ``bboxes`` float32 (N,4) xyxy
pixels with ``label`` int64 (N,) for detection; ...) and ``index``. The rest is the pipeline's
work: size-fixing transforms per sample on the CPU, then augmentation, normalization and the cast
to ``input_dtype`` on the batch, on the device. Datasets hold no transforms themselves.

A dataset declares its params once, as ``Params``: a frozen attrs class inheriting the groups it
takes (``ImageSource``, the image keys of every dataset; ``CsvSource``, a CSV of image paths;
``Download``, an archive okc can fetch), so TorchOk's flat ``dataset.params`` keys stay flat.
``okc.config`` structures a config's params into it (types, Literal choices and the rules of its
``__attrs_post_init__``) and builds ``Dataset(params)``; from Python, ``Dataset(key=value, ...)``
is structured the same way. ``load(params)`` then reads the dataset's index.

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

from okc.config.params import given
from okc.data.annotations import Table, read_table
from okc.data.io import CorruptSampleError, ImageFormat, ImageReadError, read_image, read_mask
from okc.errors import OkcError
from okc.paths import data_dir

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


@attrs.frozen(kw_only=True)
class ImageSource:
    """The params every okc dataset takes (TorchOk's ``ImageDataset``'s).

    Args:
        input_dtype: dtype of ``image`` after the on-device transform (the pipeline applies it).
        image_format: channels of ``image``: rgb, bgr, rgba or gray.
        rgba_layout_color: colour that transparent pixels are composited over (unless rgba).
        test_mode: drop targets (prediction on unlabelled data).
        reader_library: accepted for TorchOk configs; okc always decodes with torchvision/PIL.
        skip_corrupt: skip samples whose files are missing or corrupt (warned and counted) instead
            of failing.
    """

    input_dtype: InputDtype = "float32"
    image_format: ImageFormat = "rgb"
    rgba_layout_color: int | tuple[int, ...] = 0
    test_mode: bool = False
    reader_library: str | None = None
    skip_corrupt: bool = False


@attrs.frozen(kw_only=True)
class CsvSource(ImageSource):
    """Images listed in a CSV column (TorchOk's CSV datasets).

    Args:
        data_folder: the folder image paths (and ``annotation_path``) are relative to (default:
            the working directory).
        annotation_path: the CSV (TSV by its suffix); relative to ``data_folder`` unless absolute.
        input_column: the column of image paths.
        csv_path: TorchOk's old name of ``annotation_path`` (deprecated).
        lazy_init: accepted for TorchOk configs: okc reads the annotations up front, so a bad
            cell fails at the start, naming its file line.
    """

    data_folder: str = ""
    annotation_path: str | None = None
    input_column: str = "image_path"
    csv_path: str | None = None
    lazy_init: bool = False


@attrs.frozen(kw_only=True)
class Download(ImageSource):
    """A dataset okc unpacks from its archive, downloaded on request.

    Args:
        train: the training split (else the test/validation split).
        download: fetch the archive when it is not in ``data_folder``.
        data_folder: where the archive and what it unpacks to live (default: okc's data cache,
            ``~/.cache/okc/data/<dataset>``).
    """

    train: bool = True
    download: bool = False
    data_folder: str | None = None

    def folder(self, name: str) -> Path:
        return Path(self.data_folder).expanduser() if self.data_folder else data_dir(name)


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
    """Base of okc's datasets: builds from ``Params`` (or keywords), reads files with good errors.

    Subclasses declare ``Params`` and read their index in ``load``; most keep ``paths`` (image
    files) and ``rows`` (the rows of them in use, after ``skip_corrupt``), which ``__len__``
    and ``_first`` read.
    """

    Params: ClassVar[type[Any]] = ImageSource
    image_keys: ClassVar[tuple[str, ...]] = ("image",)
    ragged_keys: ClassVar[tuple[str, ...]] = ()
    min_area: float = 0.0  # detection datasets: which boxes augmentation drops (okc.data.ops)
    min_visibility: float = 0.0
    paths: list[str]
    rows: Sequence[int]

    def __init__(self, params: Any = None, /, **kwargs: Any) -> None:
        self.params = params = given(type(self), params, kwargs)
        self.input_dtype = to_dtype(params.input_dtype)
        self.image_format: ImageFormat = params.image_format
        self.rgba_layout_color = params.rgba_layout_color
        self.test_mode: bool = params.test_mode
        self.skip_corrupt: bool = params.skip_corrupt
        self.load(params)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Params" in vars(cls):  # errors name the class that declares them, not a subclass
            cls.Params.__okc_component__ = cls.__name__

    def load(self, params: Any) -> None:
        """Read the dataset's index from its ``Params`` (a subclass with its own ``__init__``
        and keyword signature reads it there instead)."""

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def where(self, row: int) -> str:
        """Where sample ``row`` comes from, for error messages (a CSV line, a file)."""
        return f"sample {row}"

    def _keep_existing(self) -> None:
        """``rows``: every path, or with ``skip_corrupt`` those whose file exists."""
        rows = range(len(self.paths))
        self.rows = drop_missing(self.paths, self.where) if self.skip_corrupt else rows

    def _first(self, index: int) -> tuple[int, dict[str, Any]]:
        """The row of sample ``index`` and the sample's start: its image and index."""
        row = self.rows[index]
        return row, {"image": self._image(self.paths[row], row), "index": index}

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


class CsvDataset(ImageDataset):
    """A dataset of images listed in a CSV (``CsvSource``); rows point at their file line."""

    Params: ClassVar[type[Any]] = CsvSource
    table: Table

    def _read(self, params: CsvSource, targets: Sequence[str] = ()) -> Path:
        """Read the CSV's image paths and, unless ``test_mode``, its ``targets`` columns;
        returns the data folder."""
        folder = root_folder(params.data_folder)
        own = [] if self.test_mode else targets
        columns = list(dict.fromkeys([params.input_column, *own]))
        path = annotation_file(folder, params.annotation_path, params.csv_path)
        self.table = read_table(path, columns)
        self.paths = [str(folder / p) for p in self.table[params.input_column]]
        self._keep_existing()
        return folder

    def where(self, row: int) -> str:
        return self.table.where(row)


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
