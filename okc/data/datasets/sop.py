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

from pathlib import Path
from typing import Any, ClassVar

import attrs
import torch

from okc.data.annotations import read_table
from okc.data.datasets.base import Download, ImageDataset
from okc.data.datasets.download import Archive, unpack_archive
from okc.errors import OkcError
from okc.registry import DATASETS

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


def sop_root(p: Download) -> Path:
    """``data_folder/Stanford_Online_Products``, unpacked from the archive when missing."""
    archive = ARCHIVES["SOP"]
    folder = p.folder("sop")
    root = folder / archive.folder
    if root.is_dir():
        return root
    return unpack_archive(
        folder, url=archive.url, md5=archive.md5, inner=archive.folder, download=p.download
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

    @attrs.frozen(kw_only=True)
    class Params(Download):
        pass

    def load(self, p: Params) -> None:
        train, root = p.train, sop_root(p)
        self.listing = root / ("Ebay_train.txt" if train else "Ebay_test.txt")
        paths, class_ids, self.lines = _read_listing(self.listing)
        self.paths = [str(root / path) for path in paths]
        first = FIRST_CLASS_ID[train]
        for row, class_id in enumerate(class_ids):
            if class_id < first:
                raise OkcError(
                    f"{self.where(row)}: class_id {class_id} is below {first}, the first class id "
                    f"of SOP's {'train' if train else 'test'} split"
                )
        self.targets = torch.tensor(class_ids, dtype=torch.int64) - first
        self._keep_existing()

    def where(self, row: int) -> str:
        return f"{self.listing} line {self.lines[row]}"

    def class_labels(self) -> torch.Tensor:
        """The class of every sample, in index order (for class-balanced sampling)."""
        return self.targets[list(self.rows)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        row, sample = self._first(index)
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

    @attrs.frozen(kw_only=True)
    class Params(Download):
        anchor_column: str = "anchor"
        positive_column: str = "positive"
        negative_column: str = "negative"

    def load(self, p: Params) -> None:
        root = sop_root(p)
        self.columns = (p.anchor_column, p.positive_column, p.negative_column)
        name = "sop_triplet_train.csv" if p.train else "sop_triplet_test.csv"
        if not (root / name).is_file():
            raise OkcError(
                f"{root / name} not found: the triplet lists come with TorchOk's SOP archive "
                f"({ARCHIVES['SOP'].url}), not with the official zip"
            )
        self.table = read_table(root / name, self.columns)
        self.paths = {c: [str(root / path) for path in self.table[c]] for c in self.columns}

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
