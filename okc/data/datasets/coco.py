"""COCO detection (2017): the official images and ``instances_*.json``, downloaded on request.

Layout, as TorchOk's: ``<data_folder>/COCO/{train2017,val2017}/`` and
``<data_folder>/COCO/annotations/instances_{train,val}2017.json``. With ``download: true`` the
official archives (``ARCHIVES``, a module-level table tests and mirrors can repoint) are fetched,
checked against their md5 and unpacked; archives already in ``<data_folder>/COCO`` are unpacked
without a download, so offline the files can be put there by hand.

Category ids are mapped to labels 0..K-1 in id order (COCO 2017: its 80 ids to 0..79, as
TorchOk's table did). Crowd annotations (``iscrowd: 1``, regions of many objects) are left out:
okc has no "ignore" boxes and a crowd region is not one object (TorchOk kept them as objects).
Images without annotations are kept: they train the background. The parsed annotations are cached
beside the json (``okc_<split>.pt``, rebuilt when the json changes): COCO's train json takes
tens of seconds to parse.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import attrs
import torch

from okc.data.datasets.base import Download
from okc.data.datasets.detection import BoxDataset, BoxOptions
from okc.data.datasets.download import Archive, fetch, md5sum
from okc.errors import OkcError
from okc.registry import DATASETS

ARCHIVES: dict[str, Archive] = {
    "train2017": Archive(
        url="http://images.cocodataset.org/zips/train2017.zip",
        md5="cced6f7f71b7629ddf16f17bbcfab6b2",
        folder="train2017",
    ),
    "val2017": Archive(
        url="http://images.cocodataset.org/zips/val2017.zip",
        md5="442b8da7639aecaf257c1dceb8ba8c80",
        folder="val2017",
    ),
    "annotations": Archive(
        url="http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
        md5="f4bbac642086de4f52a3fdda2de5fa2c",
        folder="annotations",
    ),
}
BASE_FOLDER = "COCO"


@DATASETS.register
class COCODetection(BoxDataset):
    """COCO 2017 object detection (118,287 train / 5,000 val images, 80 classes).

    Args:
        train: the train2017 split (else val2017).
        download: fetch the official archives that are missing (about 19 GB for train).
        data_folder: where ``COCO/`` lives (default: okc's data cache).
        bbox_dtype, target_dtype, min_area, min_visibility: see ``BoxOptions``.
    """

    @attrs.frozen(kw_only=True)
    class Params(Download, BoxOptions):
        pass

    def load(self, p: Params) -> None:
        self._box_options(p)
        folder = p.folder("coco")
        self.root = folder / BASE_FOLDER
        self.split = "train2017" if p.train else "val2017"
        annotations = self.root / "annotations" / f"instances_{self.split}.json"
        for name, present in (
            (self.split, (self.root / self.split).is_dir()),
            ("annotations", annotations.is_file()),
        ):
            if not present:
                _fetch(ARCHIVES[name], self.root, download=p.download, split=self.split)
        if not annotations.is_file():
            raise OkcError(f"{annotations} is not in the annotations archive")
        index = load_index(annotations)
        self.classes: list[str] = index["classes"]
        self.category_ids: list[int] = index["category_ids"]
        self.paths = [str(self.root / self.split / f) for f in index["files"]]
        ends = torch.cumsum(index["lengths"], 0).tolist()
        self.spans = list(zip([0, *ends[:-1]], ends, strict=True))
        self.all_boxes, self.all_labels = index["boxes"], index["labels"]

    def __len__(self) -> int:
        return len(self.paths)

    def where(self, row: int) -> str:
        return f"{self.paths[row]} (image {row} of COCO {self.split})"

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self._image(self.paths[index], index)
        start, end = self.spans[index]
        return self._sample(
            index, image, self.all_boxes[start:end], self.all_labels[start:end], "coco", index
        )


def load_index(annotations: Path) -> dict[str, Any]:
    """The split's images and boxes from ``instances_*.json``, through the ``okc_*.pt`` cache."""
    cache = annotations.with_name(f"okc_{annotations.stem}.pt")
    stat = annotations.stat()
    source = [stat.st_size, int(stat.st_mtime)]
    if cache.is_file():
        cached = torch.load(cache, weights_only=True)
        if cached.get("source") == source:
            return cached
    index = parse_annotations(annotations)
    index["source"] = source
    partial = cache.with_suffix(".part")
    torch.save(index, partial)
    os.replace(partial, cache)
    return index


def parse_annotations(path: Path) -> dict[str, Any]:
    """COCO json → files, per-image box counts, boxes (xywh) and labels (0..K-1)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        categories = sorted(data["categories"], key=lambda c: c["id"])
        images = data["images"]
        annotations = data["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise OkcError(f"{path} is not a COCO instances file ({err})") from None
    label_of = {c["id"]: i for i, c in enumerate(categories)}
    per_image: dict[int, list[dict[str, Any]]] = {im["id"]: [] for im in images}
    for ann in annotations:
        if ann.get("iscrowd", 0):
            continue
        if ann["category_id"] not in label_of or ann["image_id"] not in per_image:
            raise OkcError(f"{path}: annotation {ann.get('id')} names an unknown category or image")
        per_image[ann["image_id"]].append(ann)
    boxes, labels, lengths = [], [], []
    for im in images:
        anns = per_image[im["id"]]
        lengths.append(len(anns))
        boxes += [a["bbox"] for a in anns]
        labels += [label_of[a["category_id"]] for a in anns]
    return {
        "files": [im["file_name"] for im in images],
        "lengths": torch.tensor(lengths, dtype=torch.long),
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.long),
        "classes": [c["name"] for c in categories],
        "category_ids": [int(c["id"]) for c in categories],
    }


def _fetch(archive: Archive, root: Path, *, download: bool, split: str) -> None:
    """Unpack ``archive`` into ``root`` (downloading it first when allowed and missing)."""
    path = root / archive.filename
    if not path.is_file():
        if not download:
            raise OkcError(
                f"COCO {split}: {root / archive.folder} not found; set download: true, or put "
                f"{archive.filename} (from {archive.url}, md5 {archive.md5}) in {root}"
            )
        fetch(archive.url, path, md5=archive.md5)
    digest = md5sum(path)
    if digest != archive.md5:
        raise OkcError(
            f"{path} is corrupt or not the official archive (md5 {digest}, expected "
            f"{archive.md5}); delete it and download again, or put the right file there"
        )
    unzip(path, root, archive.folder)


def unzip(path: Path, root: Path, folder: str) -> None:
    """Unpack ``folder`` of the zip at ``path`` into ``root`` atomically; refuses members that
    would land outside ``root`` (absolute paths, ``..``)."""
    staging = root / (folder + ".unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                target = (staging / member).resolve()
                if not target.is_relative_to(staging.resolve()):
                    raise OkcError(f"{path}: member {member!r} would unpack outside {root}")
            zf.extractall(staging)
    except zipfile.BadZipFile as err:
        raise OkcError(f"cannot unpack {path}: {err}") from err
    if not (staging / folder).is_dir():
        shutil.rmtree(staging, ignore_errors=True)
        raise OkcError(f"{path} has no {folder}/ folder")
    shutil.rmtree(root / folder, ignore_errors=True)
    os.replace(staging / folder, root / folder)
    shutil.rmtree(staging, ignore_errors=True)
