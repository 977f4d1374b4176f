"""Datasets of two views per image, for contrastive self-supervised tasks (``SimCLRTask``).

A sample holds the same uint8 image twice, as ``image_0`` and ``image_1`` (TorchOk's keys). The
views become different on the device: the pipeline augments each image key of a batch with its
own random draw (``okc.data.pipeline``), so the two views of an image are two draws of the
experiment's ``augment``, made on whole batches. TorchOk augmented each view per sample, with
albumentations, in the loader workers.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from okc.data.datasets.base import CsvDataset, CsvSource
from okc.data.datasets.shapes import Drawing, DrawnShapes
from okc.registry import DATASETS

VIEWS = ("image_0", "image_1")


@DATASETS.register
class UnsupervisedContrastiveDataset(CsvDataset):
    """Unlabelled images listed in a CSV column (TorchOk's dataset for SimCLR).

    Sample keys: ``image_0``, ``image_1`` (the image, twice: see the module docstring), ``index``.
    Image paths are relative to ``data_folder``; so is ``annotation_path`` unless absolute.
    """

    image_keys: ClassVar[tuple[str, ...]] = VIEWS

    @attrs.frozen(kw_only=True)
    class Params(CsvSource):
        annotation_path: str

    def load(self, p: Params) -> None:
        self._read(p)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self._first(index)[1]["image"]
        return {VIEWS[0]: image, VIEWS[1]: image, "index": index}


@DATASETS.register
class ContrastiveShapes(DrawnShapes):
    """Shapes without labels, each image as two views (``image_0``, ``image_1``), ``index``:
    the offline dataset of ``experiments/shapes_simclr.yml``. Params: ``Drawing``'s."""

    image_keys: ClassVar[tuple[str, ...]] = VIEWS

    @attrs.frozen(kw_only=True)
    class Params(Drawing):
        pass

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.render(index)[0]
        return {VIEWS[0]: image, VIEWS[1]: image, "index": index}
