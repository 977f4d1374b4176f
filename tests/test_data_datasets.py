"""Datasets: CIFAR archives, CSV datasets, ImageFolder and Shapes, on files the tests write."""

from __future__ import annotations

import functools
import http.server
import os
import pickle
import tarfile
import threading
import time
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from datafiles import cifar10_files, cifar_batch, write_cifar_archive, write_image
from PIL import Image

from okc.config.schema import DataItem, DataLoader, Dataset, Phase
from okc.data import build_pipeline
from okc.data.collate import collate
from okc.data.datasets import cifar
from okc.data.datasets.cifar import CIFAR10, CIFAR100, load_batch
from okc.data.datasets.classification import ImageClassificationDataset
from okc.data.datasets.folder import ImageFolder
from okc.data.datasets.segmentation import ImageSegmentationDataset
from okc.data.datasets.shapes import Shapes
from okc.data.io import CorruptSampleError, read_image
from okc.errors import OkcError

# --- CIFAR ----------------------------------------------------------------------------------------


@pytest.fixture
def cifar10_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    archive = tmp_path / "cifar-10-python.tar.gz"
    md5 = write_cifar_archive(archive, "cifar-10-batches-py", cifar10_files())
    entry = attrs.evolve(cifar.ARCHIVES["CIFAR10"], md5=md5)
    monkeypatch.setitem(cifar.ARCHIVES, "CIFAR10", entry)
    return archive


def test_cifar10_parses_the_official_format(cifar10_archive: Path) -> None:
    folder = cifar10_archive.parent
    train = CIFAR10(train=True, data_folder=str(folder))
    test = CIFAR10(train=False, data_folder=str(folder))
    assert (len(train), len(test)) == (20, 3)
    sample = train[5]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.uint8
    assert sample["target"].dtype == torch.int64 and sample["index"] == 5
    with tarfile.open(cifar10_archive) as tar:  # the test's own data, written above: trusted
        raw = pickle.loads(tar.extractfile("cifar-10-batches-py/data_batch_2").read())
    assert torch.equal(train[4]["image"].flatten(), torch.from_numpy(raw[b"data"][0]))
    assert train[4]["target"].item() == raw[b"labels"][0]
    assert train.classes == [f"class{i}" for i in range(10)]
    assert "target" not in CIFAR10(data_folder=str(folder), test_mode=True)[0]


@pytest.mark.parametrize("test_mode", [False, True])
def test_cifar_reads_a_batch_as_collate_would(cifar10_archive: Path, test_mode: bool) -> None:
    """The batched read (one gather) and the per-sample path give the same batch."""
    dataset = CIFAR10(data_folder=str(cifar10_archive.parent), test_mode=test_mode)
    indices = [7, 0, 19, 3]
    batched = dataset.__getitems__(indices)
    one_by_one = collate([dataset[i] for i in indices])
    assert batched.keys() == one_by_one.keys()
    assert all(torch.equal(batched[k], one_by_one[k]) for k in batched)
    item = DataItem(
        dataset=Dataset(
            name="CIFAR10",
            params={"data_folder": str(cifar10_archive.parent), "test_mode": test_mode},
        ),
        dataloader=DataLoader(batch_size=4),
    )
    pipeline = build_pipeline(item, phase=Phase.VALID)
    assert pipeline._reader.batched  # the pipeline takes the batched read
    first = next(iter(pipeline))
    assert torch.equal(first["image"], collate([dataset[i] for i in range(4)])["image"])


def test_cifar100_fine_and_coarse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels = {"fine_labels": 100, "coarse_labels": 20}
    files = {"train": cifar_batch(6, 1, labels), "test": cifar_batch(2, 2, labels)}
    md5 = write_cifar_archive(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", files)
    monkeypatch.setitem(
        cifar.ARCHIVES, "CIFAR100", attrs.evolve(cifar.ARCHIVES["CIFAR100"], md5=md5)
    )
    fine = CIFAR100(data_folder=str(tmp_path))
    coarse = CIFAR100(data_folder=str(tmp_path), label_type="coarse")
    assert len(fine) == 6 and len(CIFAR100(train=False, data_folder=str(tmp_path))) == 2
    assert fine.targets.tolist() == files["train"][b"fine_labels"]
    assert coarse.targets.tolist() == files["train"][b"coarse_labels"]


def test_cifar_bad_md5_is_a_clear_error(
    cifar10_archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = attrs.evolve(cifar.ARCHIVES["CIFAR10"], md5="0" * 32)
    monkeypatch.setitem(cifar.ARCHIVES, "CIFAR10", entry)
    with pytest.raises(OkcError, match="corrupt or not the official archive"):
        CIFAR10(data_folder=str(cifar10_archive.parent))


def test_cifar_missing_archive_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(OkcError, match=r"cifar-10-python.tar.gz not found in .*download: true"):
        CIFAR10(data_folder=str(tmp_path))


def test_cifar_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with_closed_port = attrs.evolve(
        cifar.ARCHIVES["CIFAR10"], url="http://127.0.0.1:9/cifar-10-python.tar.gz"
    )
    monkeypatch.setitem(cifar.ARCHIVES, "CIFAR10", with_closed_port)
    start = time.perf_counter()
    with pytest.raises(OkcError, match=r"cannot download .* put cifar-10-python.tar.gz"):
        CIFAR10(data_folder=str(tmp_path), download=True)
    assert time.perf_counter() - start < 5
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_cifar_downloads_and_checks(
    cifar10_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(cifar10_archive.parent)
    )
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/cifar-10-python.tar.gz"
        monkeypatch.setitem(
            cifar.ARCHIVES, "CIFAR10", attrs.evolve(cifar.ARCHIVES["CIFAR10"], url=url)
        )
        target = tmp_path / "downloaded"
        assert len(CIFAR10(data_folder=str(target), download=True)) == 20
        assert (target / "cifar-10-python.tar.gz").is_file()
    finally:
        server.shutdown()


def test_cifar_unpickler_refuses_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo pwned",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    with pytest.raises(OkcError, match="refusing to load"):
        load_batch(path)


# --- files on disk --------------------------------------------------------------------------------


@pytest.fixture
def csv_folder(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    rows = ["image_path,label,tags"]
    for i in range(6):
        write_image(tmp_path / "img" / f"{i}.png", (10 * i, 20, 30))
        rows.append(f"img/{i}.png,{i % 3},{'0 2' if i % 2 else '1'}")
    (tmp_path / "ann.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_classification_multiclass(csv_folder: Path) -> None:
    ds = ImageClassificationDataset(data_folder=str(csv_folder), annotation_path="ann.csv")
    assert len(ds) == 6
    sample = ds[4]
    assert sample["image"].shape == (3, 6, 5) and sample["image"].dtype == torch.uint8
    assert sample["image"][0, 1, 1].item() == 40
    assert sample["target"].item() == 1 and sample["target"].dtype == torch.int64


def test_classification_multilabel(csv_folder: Path) -> None:
    ds = ImageClassificationDataset(
        data_folder=str(csv_folder),
        annotation_path="ann.csv",
        target_column="tags",
        multilabel=True,
        num_classes=3,
    )
    assert ds[1]["target"].tolist() == [1.0, 0.0, 1.0]
    assert ds[2]["target"].tolist() == [0.0, 1.0, 0.0]
    assert ds[1]["target"].dtype == torch.float32


def test_classification_image_formats(csv_folder: Path) -> None:
    common = {"data_folder": str(csv_folder), "annotation_path": "ann.csv"}
    rgb = ImageClassificationDataset(**common)[3]["image"]
    bgr = ImageClassificationDataset(**common, image_format="bgr")[3]["image"]
    gray = ImageClassificationDataset(**common, image_format="gray")[3]["image"]
    rgba = ImageClassificationDataset(**common, image_format="rgba")[3]["image"]
    assert torch.equal(bgr, rgb.flip(0))
    assert gray.shape == (1, 6, 5) and rgba.shape == (4, 6, 5)
    assert (rgba[3] == 255).all()


def test_alpha_is_composited_over_the_layout_color(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255  # one opaque pixel, the rest transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png", layout_color=(0, 0, 255))
    assert image[:, 0, 0].tolist() == [200, 0, 0]
    assert image[:, 1, 1].tolist() == [0, 0, 255]


def test_corrupt_image_names_file_and_row(csv_folder: Path) -> None:
    (csv_folder / "img" / "2.png").write_bytes(b"not an image")
    ds = ImageClassificationDataset(data_folder=str(csv_folder), annotation_path="ann.csv")
    with pytest.raises(CorruptSampleError, match=r"2\.png.*ann\.csv line 4 \(row 2\)"):
        ds[2]


def test_missing_image_names_file_and_row(csv_folder: Path) -> None:
    (csv_folder / "img" / "5.png").unlink()
    ds = ImageClassificationDataset(data_folder=str(csv_folder), annotation_path="ann.csv")
    with pytest.raises(CorruptSampleError, match=r"not found: .*5\.png.*line 7 \(row 5\)"):
        ds[5]
    with pytest.warns(UserWarning, match="skipping 1 of 6 samples"):
        skipping = ImageClassificationDataset(
            data_folder=str(csv_folder), annotation_path="ann.csv", skip_corrupt=True
        )
    assert len(skipping) == 5 and skipping[4]["target"].item() == 1  # row 4, label 4 % 3


def test_csv_missing_column(csv_folder: Path) -> None:
    with pytest.raises(OkcError, match=r"no column 'image_pth', did you mean 'image_path'\?"):
        ImageClassificationDataset(
            data_folder=str(csv_folder), annotation_path="ann.csv", input_column="image_pth"
        )


def test_missing_data_folder(tmp_path: Path) -> None:
    with pytest.raises(OkcError, match="data folder does not exist"):
        ImageClassificationDataset(data_folder=str(tmp_path / "nope"), annotation_path="a.csv")


def test_bad_label_names_the_row(csv_folder: Path) -> None:
    (csv_folder / "bad.csv").write_text("image_path,label\nimg/0.png,0\nimg/1.png,cat\n")
    with pytest.raises(OkcError, match=r"bad\.csv line 3 \(row 1\): label 'cat'"):
        ImageClassificationDataset(data_folder=str(csv_folder), annotation_path="bad.csv")


def test_segmentation_reads_masks(tmp_path: Path) -> None:
    rows = ["image_path,mask_path"]
    for i in range(3):
        write_image(tmp_path / f"{i}.jpg", (100, 100, 100))
        mask = np.zeros((6, 5), dtype=np.uint8)
        mask[i, :] = i + 1
        Image.fromarray(mask).save(tmp_path / f"{i}_mask.png")
        rows.append(f"{i}.jpg,{i}_mask.png")
    (tmp_path / "seg.csv").write_text("\n".join(rows))
    ds = ImageSegmentationDataset(data_folder=str(tmp_path), annotation_path="seg.csv")
    sample = ds[2]
    assert sample["mask"].shape == (6, 5) and sample["mask"].dtype == torch.int64
    assert sample["mask"][2].tolist() == [3] * 5 and sample["mask"].sum() == 15


def test_image_folder(tmp_path: Path) -> None:
    for name, count in (("cat", 2), ("dog", 3)):
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(count):
            write_image(tmp_path / "train" / name / f"{i}.jpg", (0, 0, 0))
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    ds = ImageFolder(data_folder=str(tmp_path), split="train")
    assert ds.classes == ["cat", "dog"] and len(ds) == 5
    assert [ds[i]["target"].item() for i in range(5)] == [0, 0, 1, 1, 1]
    only_dogs = ImageFolder(data_folder=str(tmp_path / "train"), classes=["dog"])
    assert len(only_dogs) == 3
    flat = ImageFolder(data_folder=str(tmp_path / "train" / "cat"), test_mode=True)
    assert len(flat) == 2 and "target" not in flat[0]


def test_image_folder_unpacks_an_archive(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "test" / "ship").mkdir(parents=True)
    write_image(source / "test" / "ship" / "0001.jpg", (1, 2, 3))
    with tarfile.open(tmp_path / "data.tar.gz", "w:gz") as tar:
        tar.add(source / "test", arcname="test")
    ds = ImageFolder(
        data_folder=str(tmp_path / "unpacked"), split="test", archive=str(tmp_path / "data.tar.gz")
    )
    assert ds.classes == ["ship"] and len(ds) == 1


# --- Shapes -------------------------------------------------------------------------------------


def test_shapes_is_deterministic_per_index() -> None:
    a = Shapes(num_samples=50, image_size=24, seed=3, with_mask=True, with_instances=True)
    b = Shapes(num_samples=50, image_size=24, seed=3, with_mask=True, with_instances=True)
    for i in (0, 7, 49):
        for key in ("image", "target", "mask", "instances"):
            assert torch.equal(a[i][key], b[i][key])
    assert torch.equal(a[7]["image"], a[7]["image"])  # re-drawing gives the same sample
    other_seed = Shapes(num_samples=50, image_size=24, seed=4)
    valid = Shapes(num_samples=50, image_size=24, seed=3, split="valid")
    assert not torch.equal(a[0]["image"], other_seed[0]["image"])
    assert not torch.equal(a[0]["image"], valid[0]["image"])
    assert torch.equal(
        valid[0]["image"], Shapes(num_samples=5, image_size=24, seed=3, train=False)[0]["image"]
    )


def test_shapes_samples_are_consistent() -> None:
    ds = Shapes(num_samples=200, image_size=32, num_classes=6, with_mask=True, with_instances=True)
    targets = torch.stack([ds[i]["target"] for i in range(200)])
    assert targets.min() >= 0 and targets.max() < 6
    assert len(targets.unique()) == 6  # every class appears
    sample = ds[3]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.uint8
    on_shape = sample["instances"] == 1
    assert on_shape.sum() > 20  # the shape is big enough to see
    assert (sample["mask"][on_shape] == sample["target"] + 1).all()
    assert (sample["mask"][~on_shape] == 0).all()


def test_shapes_several_shapes_give_multi_hot() -> None:
    ds = Shapes(num_samples=10, num_shapes=3, num_classes=4, with_instances=True)
    sample = ds[0]
    assert sample["target"].shape == (4,) and sample["target"].dtype == torch.float32
    assert 1 <= sample["target"].sum() <= 3
    assert sample["instances"].max() <= 3
