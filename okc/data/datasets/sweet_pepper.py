"""Sweet Pepper (Kaggle ``lemontyc/sweet-pepper``) as TorchOk packaged it: peppers and peduncles.

620 HD greenhouse images, 500 for training and 120 for validation, with masks of three classes:
0 background, 1 fruit, 2 peduncle. TorchOk's archive unpacks to ``sweet_pepper/`` holding
``train.csv`` and ``valid.csv`` (columns ``image_path`` and ``mask``, paths relative to that
folder) beside the images and masks. Download, md5 check and unpacking are
``okc.data.datasets.download``'s (``ARCHIVE`` is module-level so tests and mirrors can point it
elsewhere).
"""

from __future__ import annotations

import attrs

from okc.data.datasets.base import Download, ImageSource, TargetDtype
from okc.data.datasets.download import Archive, unpack_archive
from okc.data.datasets.segmentation import ImageSegmentationDataset
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

    Args: ``Download``'s (``train``: the 500 training images, else the 120 validation images;
    the default ``data_folder`` is ``~/.cache/okc/data/sweet_pepper``) and ``target_dtype``.

    Masks are checked against the three classes as they are read (see
    ``ImageSegmentationDataset``).
    """

    @attrs.frozen(kw_only=True)
    class Params(Download):
        target_dtype: TargetDtype = "int64"

    def load(self, p: Params) -> None:  # type: ignore[override]
        folder = p.folder("sweet_pepper")
        annotation = ARCHIVE.train[0] if p.train else ARCHIVE.test[0]
        if not (folder / ARCHIVE.folder / annotation).is_file():
            unpack_archive(
                folder, url=ARCHIVE.url, md5=ARCHIVE.md5, inner=ARCHIVE.folder, download=p.download
            )
        source = {a.name: getattr(p, a.name) for a in attrs.fields(ImageSource)}
        super().load(ImageSegmentationDataset.Params(
            **source, data_folder=str(folder / ARCHIVE.folder), annotation_path=annotation,
            target_column="mask", target_dtype=p.target_dtype, num_classes=NUM_CLASSES,
        ))  # fmt: skip
