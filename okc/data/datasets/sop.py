"""Stanford Online Products (SOP), for metric learning: ``SOP`` (labelled images) and
``TRIPLET_SOP`` (anchor/positive/negative triplets), TorchOk's datasets.

SOP (Song et al., "Deep Metric Learning via Lifted Structured Feature Embedding", CVPR 2016) holds
120,053 photos of 22,634 products: 59,551 images of 11,318 products for training and 60,502 of the
other 11,316 for testing, so evaluation is retrieval of unseen classes. TorchOk downloads its own
archive of it, which adds the triplet lists. Layout, under ``data_folder``::

    Stanford_Online_Products.tar.gz        (kept after unpacking; not needed once unpacked)
    Stanford_Online_Products/
        Ebay_train.txt, Ebay_test.txt      space-separated: image_id class_id super_class_id path
        sop_triplet_train.csv, sop_triplet_test.csv   comma-separated: anchor,positive,negative
        bicycle_final/111085122871_0.JPG, ...          the images (paths relative to this folder)

Labels are ``class_id - 1`` in train and ``class_id - 11319`` in test (TorchOk's rule: both start
at 0). The official zip from Stanford has the same folder without the triplet lists: unzipped
into ``data_folder`` it serves ``SOP``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import torch

from okc.data.annotations import read_table
from okc.data.datasets.base import ImageDataset, InputDtype, drop_missing
from okc.data.datasets.download import unpack_archive
from okc.data.io import ImageFormat
from okc.errors import OkcError
from okc.paths import data_dir
from okc.registry import DATASETS


@attrs.frozen
class Archive:
    url: str
    md5: str
    folder: str  # the folder the archive unpacks to


# TorchOk's archive (URL and checksum); a module-level table so tests and mirrors can repoint it.
ARCHIVES: dict[str, Archive] = {
    "SOP": Archive(
        url="https://torchok-hub.s3.eu-west-1.amazonaws.com/Stanford_Online_Products.tar.gz",
        md5="b96128cf2b75493708511ff5c400eefe",
        folder="Stanford_Online_Products",
    )
}
# The first class id of each split in Ebay_*.txt: labels start at 0 in both.
FIRST_CLASS_ID = {True: 1, False: 11319}


def sop_root(data_folder: str | None, *, download: bool) -> Path:
    """``data_folder/Stanford_Online_Products``, unpacked from the archive when missing."""
    archive = ARCHIVES["SOP"]
    folder = Path(data_folder).expanduser() if data_folder else data_dir("sop")
    root = folder / archive.folder
    if root.is_dir():
        return root
    return unpack_archive(
        folder, url=archive.url, md5=archive.md5, inner=archive.folder, download=download
    )


@DATASETS.register
class SOP(ImageDataset):
    """SOP's labelled images: ``image``, ``target`` (int64 product class), ``index``.

    Args:
        train: the training split (``Ebay_train.txt``), else the test split.
        download: fetch TorchOk's archive when ``data_folder`` lacks it and its folder.
        data_folder: the folder holding ``Stanford_Online_Products/`` (default: okc's data cache,
            ``~/.cache/okc/data/sop``).
    """

    def __init__(
        self,
        *,
        train: bool = True,
        download: bool = False,
        data_folder: str | None = None,
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
        root = sop_root(data_folder, download=download)
        self.listing = root / ("Ebay_train.txt" if train else "Ebay_test.txt")
        paths, class_ids, self.lines = _read_listing(self.listing)
        self.paths = [str(root / p) for p in paths]
        first = FIRST_CLASS_ID[train]
        for row, class_id in enumerate(class_ids):
            if class_id < first:
                raise OkcError(
                    f"{self.where(row)}: class_id {class_id} is below {first}, the first class id "
                    f"of SOP's {'train' if train else 'test'} split"
                )
        self.targets = torch.tensor(class_ids, dtype=torch.int64) - first
        self.rows = drop_missing(self.paths, self.where) if skip_corrupt else range(len(self.paths))

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, row: int) -> str:
        return f"{self.listing} line {self.lines[row]}"

    def class_labels(self) -> torch.Tensor:
        """The class of every sample, in index order (for class-balanced sampling)."""
        return self.targets[list(self.rows)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        sample: dict[str, Any] = {"image": self._image(self.paths[row], row), "index": index}
        if not self.test_mode:
            sample["target"] = self.targets[row]
        return sample


@DATASETS.register
class TRIPLET_SOP(ImageDataset):  # TorchOk's registered name
    """SOP triplets for a triplet loss: ``anchor``, ``positive`` (same product), ``negative``
    (another product), each a uint8 image, and ``index``. Each image gets its own augmentation.

    Args:
        train: ``sop_triplet_train.csv``, else ``sop_triplet_test.csv``.
        download, data_folder: as for ``SOP``.
        anchor_column, positive_column, negative_column: the CSV columns of the three paths.
    """

    image_keys: ClassVar[tuple[str, ...]] = ("anchor", "positive", "negative")

    def __init__(
        self,
        *,
        train: bool = True,
        download: bool = False,
        data_folder: str | None = None,
        anchor_column: str = "anchor",
        positive_column: str = "positive",
        negative_column: str = "negative",
        input_dtype: InputDtype = "float32",
        image_format: ImageFormat = "rgb",
        rgba_layout_color: int | Sequence[int] = 0,
        reader_library: str | None = None,
    ) -> None:
        super().__init__(
            input_dtype=input_dtype,
            image_format=image_format,
            rgba_layout_color=rgba_layout_color,
            reader_library=reader_library,
        )
        root = sop_root(data_folder, download=download)
        self.columns = (anchor_column, positive_column, negative_column)
        name = "sop_triplet_train.csv" if train else "sop_triplet_test.csv"
        if not (root / name).is_file():
            raise OkcError(
                f"{root / name} not found: the triplet lists come with TorchOk's SOP archive "
                f"({ARCHIVES['SOP'].url}), not with the official zip"
            )
        self.table = read_table(root / name, self.columns)
        self.paths = {c: [str(root / p) for p in self.table[c]] for c in self.columns}

    def __len__(self) -> int:
        return len(self.table)

    def where(self, row: int) -> str:
        return self.table.where(row)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample: dict[str, Any] = {
            key: self._image(self.paths[column][index], index)
            for key, column in zip(self.image_keys, self.columns, strict=True)
        }
        sample["index"] = index
        return sample


def _read_listing(path: Path) -> tuple[list[str], list[int], list[int]]:
    """``path`` and ``class_id`` of every row of an ``Ebay_*.txt`` file, with its line number."""
    if not path.is_file():
        raise OkcError(f"{path} not found: is {path.parent} the unpacked SOP folder?")
    with open(path, encoding="utf-8") as f:
        header = f.readline().split()
        missing = [c for c in ("class_id", "path") if c not in header]
        if missing:
            raise OkcError(
                f"{path} line 1: the header {' '.join(header) or '(empty)'} lacks "
                f"{' and '.join(missing)}"
            )
        at_id, at_path = header.index("class_id"), header.index("path")
        paths, class_ids, lines = [], [], []
        for number, line in enumerate(f, start=2):
            cells = line.split()
            if not cells:
                continue
            if len(cells) != len(header):
                raise OkcError(f"{path} line {number}: {len(cells)} cells, expected {len(header)}")
            try:
                class_ids.append(int(cells[at_id]))
            except ValueError:
                raise OkcError(
                    f"{path} line {number}: class_id '{cells[at_id]}' is not an integer"
                ) from None
            paths.append(cells[at_path])
            lines.append(number)
    return paths, class_ids, lines
