"""RetrievalDataset: queries, their graded relevant images and an optional gallery, from CSVs.

TorchOk's format, for the retrieval meters' ``representation`` type:

- ``matches_csv_path``: ``query,relevant,scores``: a query image id, the space-separated ids of
  its relevant images and, optionally, their space-separated relevance scores (> 0; default 1);
- ``img_list_csv_path``: ``id,image_path[,label]`` for every query and relevant image (paths under
  ``data_folder``; ``label`` is an optional group for ``group_averaging``);
- ``gallery_list_csv_path``: ``id,image_path`` of extra gallery images (distractors), paths under
  ``gallery_folder``.

Samples are ordered queries first (in the matches' order), then relevant images in order of first
appearance, then the other listed images, then the gallery. Each sample holds ``image``,
``index``, ``query_idxs`` (its query number, −1 if not a query), ``scores`` (float32, one column
per query: its relevance to that query) and ``group_labels`` (the label, −1 in the gallery).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch

from okc.data.annotations import Table, read_table
from okc.data.datasets.base import ImageDataset, ImageSource, root_folder
from okc.errors import OkcError, ParamError
from okc.registry import DATASETS


@DATASETS.register
class RetrievalDataset(ImageDataset):
    """Query/relevant/gallery images with the relevance of every image to every query.

    Args:
        data_folder: the folder the CSVs and the images' paths are relative to.
        matches_csv_path, img_list_csv_path: see the module docstring.
        gallery_folder: the folder of ``gallery_list_csv_path`` and of its image paths (default
            ``data_folder``; a relative path is relative to the working directory, as in TorchOk).
        gallery_list_csv_path: the gallery list; none: every image that is not relevant to a
            query is the gallery of that query.
        use_query_without_relevants: allow queries with an empty ``relevant`` cell (else an
            error naming the row). The retrieval meters need ``raise_empty_query: false`` then.
    """

    @attrs.frozen(kw_only=True)
    class Params(ImageSource):
        matches_csv_path: str
        img_list_csv_path: str
        data_folder: str = ""
        gallery_folder: str = ""
        gallery_list_csv_path: str | None = None
        use_query_without_relevants: bool = False

        def __attrs_post_init__(self) -> None:
            if self.skip_corrupt:
                raise ParamError("skip_corrupt", "a retrieval dataset scores every image: fix "
                                 "or remove the broken files instead")  # fmt: skip

    def load(self, p: Params) -> None:
        folder = root_folder(p.data_folder)
        matches_csv_path, img_list_csv_path = p.matches_csv_path, p.img_list_csv_path
        images = _image_list(read_table(folder / img_list_csv_path, ["id", "image_path"]))
        labels = _labels(folder / img_list_csv_path)
        matches = _matches(folder / matches_csv_path, p.use_query_without_relevants)
        order = [query for query, _ in matches]
        seen = set(order)
        for _, relevant in matches:
            for image_id, _score in relevant:
                if image_id not in seen:
                    seen.add(image_id)
                    order.append(image_id)
        order += [image_id for image_id in images if image_id not in seen]
        missing = [i for i in order if i not in images]
        if missing:
            raise OkcError(
                f"{folder / matches_csv_path}: image id {missing[0]} is not in "
                f"{folder / img_list_csv_path}"
            )
        self.paths = [str(folder / images[i]) for i in order]
        group = [labels.get(i, 0) for i in order]
        if p.gallery_list_csv_path is not None:
            gallery_root = Path(p.gallery_folder).expanduser() if p.gallery_folder else folder
            gallery = _image_list(read_table(gallery_root / p.gallery_list_csv_path,
                                             ["id", "image_path"]))  # fmt: skip
            self.paths += [str(gallery_root / path) for path in gallery.values()]
            group += [-1] * len(gallery)
        index = {image_id: i for i, image_id in enumerate(order)}
        self.scores = torch.zeros(len(self.paths), len(matches))
        for q, (_, relevant) in enumerate(matches):
            for image_id, score in relevant:
                self.scores[index[image_id], q] = score
        self.query_idxs = torch.full((len(self.paths),), -1, dtype=torch.int64)
        self.query_idxs[: len(matches)] = torch.arange(len(matches))
        self.group_labels = torch.tensor(group, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def where(self, row: int) -> str:
        return f"retrieval sample {row}"

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": self._image(self.paths[index], index),
            "index": index,
            "query_idxs": self.query_idxs[index],
            "scores": self.scores[index],
            "group_labels": self.group_labels[index],
        }


def _image_list(table: Table) -> dict[str, str]:
    """Image id → path; an id listed twice is an error naming both rows."""
    images: dict[str, str] = {}
    first: dict[str, int] = {}
    for row, (image_id, path) in enumerate(zip(table["id"], table["image_path"], strict=True)):
        if image_id in images:
            raise OkcError(
                f"{table.where(row)}: image id {image_id} is already listed at "
                f"{table.where(first[image_id])}"
            )
        images[image_id], first[image_id] = path, row
    return images


def _labels(path: Path) -> dict[str, int]:
    """The optional ``label`` column of the image list (0 for every image without it)."""
    try:
        table = read_table(path, ["id", "label"])
    except OkcError:
        return {}
    labels = {}
    for row, (image_id, label) in enumerate(zip(table["id"], table["label"], strict=True)):
        try:
            labels[image_id] = int(label)
        except ValueError:
            raise OkcError(f"{table.where(row)}: label '{label}' is not an integer") from None
    return labels


def _matches(path: Path, allow_empty: bool) -> list[tuple[str, list[tuple[str, float]]]]:
    """``(query id, [(relevant id, score), ...])`` per row of the matches CSV."""
    table = read_table(path, ["query", "relevant"])
    try:
        scores = read_table(path, ["scores"])["scores"]
    except OkcError:
        scores = [""] * len(table)
    matches = []
    for row, (query, relevant, score) in enumerate(
        zip(table["query"], table["relevant"], scores, strict=True)
    ):
        ids = relevant.split()
        if not ids and not allow_empty:
            raise OkcError(
                f"{table.where(row)}: query {query} has no relevant image; fix the CSV or set "
                "use_query_without_relevants: true"
            )
        try:
            values = [float(s) for s in score.split()] if score else [1.0] * len(ids)
        except ValueError:
            raise OkcError(f"{table.where(row)}: scores '{score}' are not numbers") from None
        if len(values) != len(ids) or any(v <= 0 for v in values):
            raise OkcError(
                f"{table.where(row)}: {len(ids)} relevant ids need as many scores > 0, got "
                f"'{score}'"
            )
        matches.append((query, list(zip(ids, values, strict=True))))
    return matches
