"""Detection data: TorchOk's CSV format in every box format, COCO (download, offline, parsing),
Shapes with boxes, and boxes through the pipeline (per-sample transform, batched augment)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from PIL import Image

from okc.config.schema import DataItem, DataLoader, Dataset, Phase
from okc.data import build_pipeline
from okc.data.datasets import COCODetection, DetectionDataset, Shapes, coco
from okc.errors import ConfigError, OkcError

# --- TorchOk's CSV --------------------------------------------------------------------------------

BOXES_XYXY = [[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 64.0, 8.0]]  # on 48 (H) x 64 (W) images


def _as(box_format: str) -> list[list[float]]:
    out = []
    for x1, y1, x2, y2 in BOXES_XYXY:
        w, h = x2 - x1, y2 - y1
        out.append({
            "coco": [x1, y1, w, h],
            "pascal_voc": [x1, y1, x2, y2],
            "albumentations": [x1 / 64, y1 / 48, x2 / 64, y2 / 48],
            "yolo": [(x1 + w / 2) / 64, (y1 + h / 2) / 48, w / 64, h / 48],
        }[box_format])  # fmt: skip
    return out


def _csv_folder(tmp_path: Path, rows: list[tuple[str, str, str]]) -> Path:
    for i in range(len(rows)):
        Image.new("RGB", (64, 48), (i * 40, 100, 200)).save(tmp_path / f"im{i}.png")
    lines = ["image_path,bbox,label"] + [f'{p},"{b}","{lab}"' for p, b, lab in rows]
    (tmp_path / "boxes.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


@pytest.mark.parametrize("box_format", ["coco", "pascal_voc", "yolo", "albumentations"])
def test_csv_boxes_in_every_format_become_xyxy_pixels(tmp_path: Path, box_format: str) -> None:
    folder = _csv_folder(tmp_path, [("im0.png", json.dumps(_as(box_format)), "[3, 1]"),
                                    ("im1.png", "[]", "[]")])  # fmt: skip
    ds = DetectionDataset(data_folder=str(folder), annotation_path="boxes.csv",
                          bbox_format=box_format)  # fmt: skip
    sample = ds[0]
    torch.testing.assert_close(sample["bboxes"], torch.tensor(BOXES_XYXY))
    assert sample["label"].tolist() == [3, 1] and sample["label"].dtype == torch.int64
    assert sample["orig_img_shape"].tolist() == [48, 64, 3]
    empty = ds[1]  # an image without boxes is a sample with none
    assert empty["bboxes"].shape == (0, 4) and empty["label"].shape == (0,)


def test_csv_clips_boxes_and_drops_those_outside(tmp_path: Path) -> None:
    boxes = [[-5, 40, 20, 20], [70, 10, 5, 5], [10, 10, 0, 5]]  # coco: partly out, out, no width
    folder = _csv_folder(tmp_path, [("im0.png", json.dumps(boxes), "[0, 1, 2]")])
    for on_start in (False, True):
        ds = DetectionDataset(data_folder=str(folder), annotation_path="boxes.csv",
                              filter_bboxes_on_start=on_start)  # fmt: skip
        sample = ds[0]
        torch.testing.assert_close(sample["bboxes"], torch.tensor([[0.0, 40.0, 15.0, 48.0]]))
        assert sample["label"].tolist() == [0]


@pytest.mark.parametrize(
    ("bbox", "label", "message"),
    [
        ("[[1, 2, 3]]", "[0]", "must hold boxes of 4 numbers"),
        ("[[1, 2, 3, 4]]", "[0, 1]", "1 boxes but 2 labels"),
        ("[[1, 2, 3, 4]", "[0]", "column 'bbox' is not a JSON list"),
    ],
)
def test_bad_csv_rows_name_the_file_and_line(
    tmp_path: Path, bbox: str, label: str, message: str
) -> None:
    folder = _csv_folder(tmp_path, [("im0.png", "[]", "[]"), ("im1.png", bbox, label)])
    with pytest.raises(OkcError, match=rf"boxes.csv line 3 \(row 1\): .*{message}"):
        DetectionDataset(data_folder=str(folder), annotation_path="boxes.csv")


def test_negative_box_size_is_named(tmp_path: Path) -> None:
    folder = _csv_folder(tmp_path, [("im0.png", "[[10, 10, -4, 5]]", "[0]")])
    ds = DetectionDataset(data_folder=str(folder), annotation_path="boxes.csv")
    with pytest.raises(OkcError, match=r"negative width or height .*line 2"):
        ds[0]


def test_test_mode_has_no_boxes(tmp_path: Path) -> None:
    (tmp_path / "list.csv").write_text("image_path\nim0.png\n")
    Image.new("RGB", (8, 8)).save(tmp_path / "im0.png")
    ds = DetectionDataset(data_folder=str(tmp_path), annotation_path="list.csv", test_mode=True)
    assert set(ds[0]) == {"image", "index", "orig_img_shape"}


# --- COCO -----------------------------------------------------------------------------------------


def _coco_json(split: str) -> dict[str, Any]:
    images = [{"id": 7, "file_name": "a.jpg", "height": 40, "width": 60},
              {"id": 9, "file_name": "b.jpg", "height": 40, "width": 60}]  # fmt: skip
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 18, "bbox": [5, 6, 10, 20], "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 3, "bbox": [30, 2, 20, 30], "iscrowd": 0},
        {"id": 3, "image_id": 7, "category_id": 3, "bbox": [0, 0, 60, 40], "iscrowd": 1},
    ]  # b.jpg has none
    categories = [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def _zip(path: Path, files: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return hashlib.md5(path.read_bytes()).hexdigest()


def _jpeg() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (60, 40), (10, 200, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def coco_archives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tiny archives shaped like the official ones, in ``tmp_path/served``; ARCHIVES points at
    them (md5s included) under a local URL set by the tests."""
    served = tmp_path / "served"
    served.mkdir()
    md5 = {
        "val2017": _zip(served / "val2017.zip", {"val2017/a.jpg": _jpeg(),
                                                 "val2017/b.jpg": _jpeg()}),
        "annotations": _zip(served / "annotations_trainval2017.zip", {
            "annotations/instances_val2017.json": json.dumps(_coco_json("val")).encode(),
        }),
    }  # fmt: skip
    for name, digest in md5.items():
        monkeypatch.setitem(coco.ARCHIVES, name, attrs.evolve(coco.ARCHIVES[name], md5=digest))
    return served


@contextlib.contextmanager
def _serve(folder: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def _point_at(monkeypatch: pytest.MonkeyPatch, base: str) -> None:
    for name in ("val2017", "annotations"):
        entry = coco.ARCHIVES[name]
        monkeypatch.setitem(
            coco.ARCHIVES, name, attrs.evolve(entry, url=f"{base}/{entry.filename}")
        )


def test_coco_downloads_unpacks_and_parses(
    coco_archives: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _serve(coco_archives) as base:
        _point_at(monkeypatch, base)
        ds = COCODetection(train=False, download=True, data_folder=str(tmp_path / "data"))
    root = tmp_path / "data" / "COCO"
    assert (root / "val2017" / "a.jpg").is_file() and (root / "val2017.zip").is_file()
    assert len(ds) == 2 and ds.classes == ["car", "dog"]  # labels in category-id order
    sample = ds[0]
    # coco xywh -> xyxy; category 18 (dog) -> 1, 3 (car) -> 0; the crowd region is left out
    torch.testing.assert_close(
        sample["bboxes"], torch.tensor([[5.0, 6.0, 15.0, 26.0], [30.0, 2.0, 50.0, 32.0]])
    )
    assert sample["label"].tolist() == [1, 0]
    assert ds[1]["bboxes"].shape == (0, 4)  # an image without annotations stays, as background
    assert (root / "annotations" / "okc_instances_val2017.pt").is_file()  # the parsed cache
    again = COCODetection(train=False, data_folder=str(tmp_path / "data"))  # no download needed
    torch.testing.assert_close(again[0]["bboxes"], sample["bboxes"])


def test_coco_unpacks_archives_put_there_by_hand(coco_archives: Path, tmp_path: Path) -> None:
    root = tmp_path / "data" / "COCO"
    root.mkdir(parents=True)
    for archive in coco_archives.iterdir():
        (root / archive.name).write_bytes(archive.read_bytes())
    assert len(COCODetection(train=False, data_folder=str(tmp_path / "data"))) == 2


def test_coco_missing_files_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(OkcError, match=r"COCO val2017: .*not found; set download: true, or put "
                                       r"val2017.zip \(from http://images.cocodataset.org"):  # fmt: skip
        COCODetection(train=False, data_folder=str(tmp_path))


def test_coco_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _point_at(monkeypatch, "http://127.0.0.1:9")  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(OkcError, match=r"cannot download .*put val2017.zip"):
        COCODetection(train=False, download=True, data_folder=str(tmp_path))
    assert time.perf_counter() - start < 5
    assert not list((tmp_path / "COCO").glob("*.zip*"))  # no partial download left


def test_coco_bad_archive_is_named(coco_archives: Path, tmp_path: Path) -> None:
    root = tmp_path / "COCO"
    root.mkdir()
    (root / "val2017.zip").write_bytes(b"not a zip")
    with pytest.raises(OkcError, match="val2017.zip is corrupt or not the official archive"):
        COCODetection(train=False, data_folder=str(tmp_path))


def test_unzip_refuses_members_outside_the_folder(tmp_path: Path) -> None:
    _zip(tmp_path / "evil.zip", {"../outside.txt": b"x"})
    with pytest.raises(OkcError, match="would unpack outside"):
        coco.unzip(tmp_path / "evil.zip", tmp_path / "root", "val2017")
    assert not (tmp_path / "outside.txt").exists()


# --- Shapes ------------------------------------------------------------------------------------------


def test_shapes_boxes_are_the_tight_boxes_of_each_visible_shape() -> None:
    ds = Shapes(num_samples=8, image_size=48, num_classes=4, num_shapes=3, with_boxes=True,
                with_instances=True)  # fmt: skip
    assert ds.ragged_keys == ("bboxes", "label")
    assert Shapes(num_samples=1).ragged_keys == ()  # no boxes, nothing ragged
    for i in range(8):
        sample = ds[i]
        _, kinds, instances = ds.render(i)
        visible = [n for n in range(1, 4) if (instances == n).any()]
        assert sample["label"].tolist() == [kinds[n - 1] for n in visible]
        for box, n in zip(sample["bboxes"], visible, strict=True):
            ys, xs = (instances == n).nonzero(as_tuple=True)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


# --- the pipeline ------------------------------------------------------------------------------------


def _item(folder: Path, transform: list[dict[str, Any]], augment: list[dict[str, Any]]) -> DataItem:
    params = {"data_folder": str(folder), "annotation_path": "boxes.csv"}
    return DataItem(
        dataset=Dataset(name="DetectionDataset", params=params, transform=transform,
                        augment=augment),
        dataloader=DataLoader(batch_size=2),
    )  # fmt: skip


def test_pipeline_moves_boxes_per_sample_and_on_the_batch(tmp_path: Path) -> None:
    folder = _csv_folder(tmp_path, [("im0.png", json.dumps(_as("coco")), "[3, 1]"),
                                    ("im1.png", "[]", "[]")])  # fmt: skip
    transform = [
        {"name": "FitResize", "params": {"max_height": 32, "max_width": 32}},
        {"name": "PadIfNeeded", "params": {"min_height": 32, "min_width": 32}},
    ]
    augment = [{"name": "HorizontalFlip", "params": {"p": 1.0}}]
    pipe = build_pipeline(_item(folder, transform, augment), phase=Phase.TRAIN)  # fmt: skip
    cpu = next(iter(pipe))
    assert isinstance(cpu["bboxes"], list) and [len(b) for b in cpu["bboxes"]] == [2, 0]
    # 64x48 -> 32x24 (half), padded 4 rows above: y + 4
    expected = torch.tensor(BOXES_XYXY) / 2 + torch.tensor([0.0, 4.0, 0.0, 4.0])
    torch.testing.assert_close(cpu["bboxes"][0], expected)
    out = pipe.to_device(cpu)
    flipped = expected[:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1, -1, 1]) + torch.tensor(
        [32.0, 0, 32, 0]
    )
    torch.testing.assert_close(out["bboxes"][0], flipped)
    assert out["label"][0].tolist() == [3, 1] and out["bboxes"][1].shape == (0, 4)


def test_pipeline_refuses_ops_that_cannot_move_boxes(tmp_path: Path) -> None:
    folder = _csv_folder(tmp_path, [("im0.png", "[]", "[]")])
    item = _item(folder, [], [{"name": "HorizontalFlip"}, {"name": "RandomElasticTransform"}])
    with pytest.raises(ConfigError, match=r"^dataset.augment.1.name: "
                                          r"RandomElasticTransform cannot move bounding boxes"):  # fmt: skip
        build_pipeline(item, phase=Phase.TRAIN)
