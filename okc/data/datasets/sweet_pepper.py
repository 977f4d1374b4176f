"""Sweet Pepper (Kaggle ``lemontyc/sweet-pepper``) as TorchOk packaged it: peppers and peduncles.

620 HD greenhouse images, 500 for training and 120 for validation, with masks of three classes:
0 background, 1 fruit, 2 peduncle. TorchOk's archive unpacks to ``sweet_pepper/`` holding
``train.csv`` and ``valid.csv`` (columns ``image_path`` and ``mask``, paths relative to that
folder) beside the images and masks. Download, md5 check and unpacking are
``okc.data.datasets.download``'s (``ARCHIVE`` is module-level so tests and mirrors can point it
elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from okc.data.datasets.base import InputDtype, TargetDtype
from okc.data.datasets.cifar import Archive
from okc.data.datasets.download import unpack_archive
from okc.data.datasets.segmentation import ImageSegmentationDataset
from okc.data.io import ImageFormat
from okc.paths import data_dir
from okc.registry import DATASETS

ARCHIVE = Archive(
    url="https://torchok-hub.s3.eu-west-1.amazonaws.com/sweet_pepper.tar.gz",
    md5="65021e5fad5fe286b3c2bac7753d6e9d",
    folder="sweet_pepper",
    train=("train.csv",),
    test=("valid.csv",),
)
NUM_CLASSES = 3  # background, fruit, peduncle


@DATASETS.register
class SweetPepper(ImageSegmentationDataset):
    """Sweet Pepper segmentation (TorchOk's ``SweetPepper``); samples: ``image``, ``mask``.

    Args:
        train: the 500 training images (else the 120 validation images).
        download: fetch TorchOk's archive when it is not in ``data_folder``.
        data_folder: where ``sweet_pepper.tar.gz`` / its unpacked ``sweet_pepper/`` folder lives
            (default: okc's data cache, ``~/.cache/okc/data/sweet_pepper``).

    Masks are checked against the three classes as they are read (see
    ``ImageSegmentationDataset``).
    """

    def __init__(
        self,
        *,
        train: bool = True,
        download: bool = False,
        data_folder: str | None = None,
        input_dtype: InputDtype = "float32",
        target_dtype: TargetDtype = "int64",
        reader_library: str | None = None,
        image_format: ImageFormat = "rgb",
        rgba_layout_color: int | Sequence[int] = 0,
        test_mode: bool = False,
        skip_corrupt: bool = False,
    ) -> None:
        folder = Path(data_folder).expanduser() if data_folder else data_dir("sweet_pepper")
        annotation = ARCHIVE.train[0] if train else ARCHIVE.test[0]
        if not (folder / ARCHIVE.folder / annotation).is_file():
            unpack_archive(
                folder, url=ARCHIVE.url, md5=ARCHIVE.md5, inner=ARCHIVE.folder, download=download
            )
        super().__init__(
            data_folder=str(folder / ARCHIVE.folder),
            annotation_path=annotation,
            target_column="mask",
            target_dtype=target_dtype,
            input_dtype=input_dtype,
            image_format=image_format,
            rgba_layout_color=rgba_layout_color,
            test_mode=test_mode,
            reader_library=reader_library,
            skip_corrupt=skip_corrupt,
            num_classes=NUM_CLASSES,
        )
