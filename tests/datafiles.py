"""Small data files the tests write: CIFAR-format archives, images, CSVs."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def cifar_batch(num: int, seed: int, label_keys: dict[str, int]) -> dict[bytes, object]:
    """One pickled batch of the official CIFAR format: random pixels and labels."""
    rng = np.random.default_rng(seed)
    batch: dict[bytes, object] = {
        b"data": rng.integers(0, 256, (num, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(num)],
    }
    for key, classes in label_keys.items():
        batch[key.encode()] = [int(v) for v in rng.integers(0, classes, num)]
    return batch


def write_cifar_archive(path: Path, folder: str, files: dict[str, dict]) -> str:
    """A .tar.gz like the official one: pickles (protocol 2) of dicts with bytes keys; its md5."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            data = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(path.read_bytes()).hexdigest()


def cifar10_files() -> dict[str, dict]:
    files = {f"data_batch_{i}": cifar_batch(4, i, {"labels": 10}) for i in range(1, 6)}
    files["test_batch"] = cifar_batch(3, 9, {"labels": 10})
    files["batches.meta"] = {b"label_names": [f"class{i}".encode() for i in range(10)]}
    return files


def write_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (6, 5)) -> None:
    """A flat-colour RGB image with a marker pixel at (0, 0), so flips are visible."""
    array = np.zeros((*size, 3), dtype=np.uint8)
    array[...] = color
    array[0, 0] = (255 - color[0], 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_mask(path: Path, values: np.ndarray) -> None:
    """A single-channel PNG label mask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8)).save(path)
