"""CIFAR-10 / CIFAR-100 from the official python archives, parsed without trusting pickle.

The archives hold pickled dicts of numpy arrays and lists. ``pickle.load`` on a downloaded file can
run arbitrary code, so batches are read with an unpickler that may only rebuild numpy arrays.
``ARCHIVES`` is a module-level table so tests (and mirrors) can point it elsewhere.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import torch

from okc.data.datasets.base import Download, ImageDataset
from okc.data.datasets.download import Archive, unpack_archive
from okc.data.io import convert_format
from okc.errors import OkcError
from okc.registry import DATASETS

ARCHIVES: dict[str, Archive] = {
    "CIFAR10": Archive(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test=("test_batch",),
    ),
    "CIFAR100": Archive(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train=("train",),
        test=("test",),
    ),
}


class _NumpyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and plain containers; refuses every other global."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_batch(path: Path) -> dict[str, Any]:
    """One CIFAR batch file as a dict with str keys."""
    try:
        with open(path, "rb") as f:
            batch = _NumpyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError) as err:
        raise OkcError(f"{path} is not a CIFAR batch file: {err}") from err
    if not isinstance(batch, dict):
        raise OkcError(f"{path} is not a CIFAR batch file (holds {type(batch).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


class _CIFAR(ImageDataset):
    archive_name = ""
    label_key = "labels"

    def load(self, p: Download) -> None:
        archive = ARCHIVES[self.archive_name]
        batches = p.folder(self.archive_name.lower()) / archive.folder
        names = archive.train if p.train else archive.test
        if not all((batches / n).is_file() for n in names):
            unpack_archive(batches.parent, url=archive.url, md5=archive.md5,
                           inner=archive.folder, download=p.download)  # fmt: skip
        parts = [load_batch(batches / n) for n in names]
        try:
            data = np.concatenate([part["data"] for part in parts])
            labels = np.concatenate([np.asarray(part[self.label_key]) for part in parts])
            images = torch.from_numpy(data).view(-1, 3, 32, 32)
        except (KeyError, ValueError, RuntimeError) as err:
            raise OkcError(f"{batches}: unexpected CIFAR batch contents ({err})") from err
        if self.image_format != "rgb":
            images = torch.stack([convert_format(im, self.image_format) for im in images])
        self.images = images
        self.targets = torch.from_numpy(labels.astype(np.int64))
        self.classes = _class_names(batches)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.test_mode:
            return {"image": self.images[index], "index": index}
        return {"image": self.images[index], "target": self.targets[index], "index": index}

    def __getitems__(self, indices: list[int]) -> dict[str, Any]:
        """A whole batch, as collate would give it, with one tensor index per key: the data is
        in memory, so a batch is a gather, not a loop of per-sample dicts and a stack."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        batch = {"image": self.images[index], "index": index}
        if not self.test_mode:
            batch["target"] = self.targets[index]
        return batch


@DATASETS.register
class CIFAR10(_CIFAR):
    """CIFAR-10 (50,000 train / 10,000 test 32x32 images, 10 classes).

    Args: ``Download``'s (``train``, ``download``, ``data_folder``) and ``ImageSource``'s.
    """

    archive_name = "CIFAR10"

    @attrs.frozen(kw_only=True)
    class Params(Download):
        pass


@DATASETS.register
class CIFAR100(_CIFAR):
    """CIFAR-100 (100 fine classes; ``label_type: coarse`` gives the 20 superclasses)."""

    archive_name = "CIFAR100"

    @attrs.frozen(kw_only=True)
    class Params(Download):
        label_type: Literal["fine", "coarse"] = "fine"

    def load(self, p: Params) -> None:
        self.label_key = f"{p.label_type}_labels"
        super().load(p)


def _class_names(batches: Path) -> list[str] | None:
    for meta_name, key in (("batches.meta", "label_names"), ("meta", "fine_label_names")):
        if (batches / meta_name).is_file():
            names = load_batch(batches / meta_name).get(key)
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names or []] or None
    return None
