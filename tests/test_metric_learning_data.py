"""Metric-learning data: SOP/TRIPLET_SOP on a tiny SOP-layout folder and archive, RetrievalDataset
on TorchOk's test CSVs, and the P×K sampler (batches, sharding, exact resume)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import tarfile
import threading
import time
from collections import Counter
from pathlib import Path

import attrs
import pytest
import torch
import yaml
from PIL import Image

from okc.config.schema import Data, DataItem, Phase
from okc.data import build_pipeline, check_data
from okc.data.datasets import sop
from okc.data.datasets.retrieval import RetrievalDataset
from okc.data.datasets.shapes import Shapes
from okc.data.datasets.sop import SOP, TRIPLET_SOP
from okc.data.samplers import PKSampler
from okc.data.sampling import BatchOrder
from okc.errors import ConfigError, ConfigErrors, OkcError

# --- a tiny SOP folder ----------------------------------------------------------------------------

TRAIN_CLASSES = {1: 5, 2: 4, 3: 4, 4: 3, 5: 2}  # class_id: images (train ids start at 1)
TEST_CLASSES = {11319: 3, 11320: 2, 11321: 2}  # test ids start at 11319


def write_sop(
    folder: Path,
    *,
    size: int = 12,
    train: dict[int, int] = TRAIN_CLASSES,
    test: dict[int, int] = TEST_CLASSES,
) -> Path:
    """``folder/Stanford_Online_Products`` with TorchOk's layout, listings and triplet CSVs;
    ``train``/``test`` give the images per class id."""
    root = folder / "Stanford_Online_Products"
    for name, classes, start in (("train", train, 0), ("test", test, 100_000)):
        lines = ["image_id class_id super_class_id path"]
        image_id = start
        for class_id, count in classes.items():
            super_name = ("bicycle_final", "chair_final")[class_id % 2]
            for j in range(count):
                image_id += 1
                path = f"{super_name}/{class_id}_{j}.JPG"
                (root / super_name).mkdir(parents=True, exist_ok=True)
                color = (class_id * 40 % 256, j * 50 % 256, 128)
                Image.new("RGB", (size, size), color).save(root / path, format="JPEG")
                lines.append(f"{image_id} {class_id} {class_id % 2 + 1} {path}")
        (root / f"Ebay_{name}.txt").write_text("\n".join(lines) + "\n")
        paths = [line.split()[3] for line in lines[1:]]
        rows = ["anchor,positive,negative"]
        for a, p, n in zip(paths, paths[1:], paths[::-1], strict=False):
            rows.append(f"{a},{p},{n}")
        (root / f"sop_triplet_{name}.csv").write_text("\n".join(rows) + "\n")
    return root


def write_archive(folder: Path) -> tuple[Path, str]:
    source = folder / "source"
    write_sop(source)
    archive = folder / "Stanford_Online_Products.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "Stanford_Online_Products", arcname="Stanford_Online_Products")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_sop_reads_torchoks_layout_and_labels(tmp_path: Path) -> None:
    write_sop(tmp_path)
    train = SOP(train=True, data_folder=str(tmp_path))
    assert len(train) == sum(TRAIN_CLASSES.values())
    sample = train[0]
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 12, 12)
    assert sample["index"] == 0
    # TorchOk's rule: class_id - 1 in train, class_id - 11319 in test
    assert Counter(train.class_labels().tolist()) == {c - 1: n for c, n in TRAIN_CLASSES.items()}
    assert [int(train[i]["target"]) for i in range(len(train))] == train.class_labels().tolist()
    test = SOP(train=False, data_folder=str(tmp_path))
    assert sorted(set(test.class_labels().tolist())) == [0, 1, 2]
    assert "target" not in SOP(train=False, data_folder=str(tmp_path), test_mode=True)[0]


def test_sop_listing_errors_name_file_and_line(tmp_path: Path) -> None:
    root = write_sop(tmp_path)
    listing = root / "Ebay_test.txt"
    lines = listing.read_text().splitlines()
    listing.write_text("\n".join([*lines, "9999 5 1 chair_final/x.JPG"]) + "\n")
    with pytest.raises(
        OkcError, match=rf"Ebay_test.txt line {len(lines) + 1}: class_id 5 is below"
    ):
        SOP(train=False, data_folder=str(tmp_path))
    listing.write_text("image_id label path\n1 1 a.JPG\n")
    with pytest.raises(OkcError, match="line 1: the header image_id label path lacks class_id"):
        SOP(train=False, data_folder=str(tmp_path))
    listing.write_text("image_id class_id super_class_id path\n1 x 1 a.JPG\n")
    with pytest.raises(OkcError, match="line 2: class_id 'x' is not an integer"):
        SOP(train=False, data_folder=str(tmp_path))


def test_sop_missing_image_names_the_listing_line(tmp_path: Path) -> None:
    root = write_sop(tmp_path)
    (root / "chair_final" / "1_0.JPG").unlink()
    dataset = SOP(train=True, data_folder=str(tmp_path))
    with pytest.raises(OkcError, match=r"1_0.JPG.*Ebay_train.txt line 2"):
        dataset[0]
    with pytest.warns(UserWarning, match="skipping 1 of 18"):
        assert len(SOP(train=True, data_folder=str(tmp_path), skip_corrupt=True)) == 17


def test_triplet_sop_gives_three_images(tmp_path: Path) -> None:
    write_sop(tmp_path)
    triplets = TRIPLET_SOP(train=True, data_folder=str(tmp_path))
    assert triplets.image_keys == ("anchor", "positive", "negative")
    assert len(triplets) == sum(TRAIN_CLASSES.values()) - 1
    sample = triplets[2]
    assert set(sample) == {"anchor", "positive", "negative", "index"}
    assert all(sample[k].shape == (3, 12, 12) for k in triplets.image_keys)
    assert not torch.equal(sample["anchor"], sample["negative"])
    (tmp_path / "Stanford_Online_Products" / "sop_triplet_test.csv").unlink()
    with pytest.raises(OkcError, match="sop_triplet_test.csv not found: the triplet lists come"):
        TRIPLET_SOP(train=False, data_folder=str(tmp_path))


@pytest.fixture
def sop_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    archive, md5 = write_archive(tmp_path / "server")
    monkeypatch.setitem(sop.ARCHIVES, "SOP", attrs.evolve(sop.ARCHIVES["SOP"], md5=md5))
    return archive


def test_sop_downloads_checks_and_unpacks_the_archive(
    sop_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(sop_archive.parent)
    )
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{sop_archive.name}"
        monkeypatch.setitem(sop.ARCHIVES, "SOP", attrs.evolve(sop.ARCHIVES["SOP"], url=url))
        target = tmp_path / "data"
        assert len(SOP(train=False, download=True, data_folder=str(target))) == 7
        assert (target / sop_archive.name).is_file()
        # the unpacked folder is used from now on, offline
        monkeypatch.setitem(sop.ARCHIVES, "SOP", attrs.evolve(sop.ARCHIVES["SOP"], url="x://"))
        assert len(TRIPLET_SOP(download=True, data_folder=str(target))) == 17
    finally:
        server.shutdown()


def test_sop_archive_put_by_hand_is_checked_and_unpacked(sop_archive: Path, tmp_path: Path) -> None:
    folder = sop_archive.parent  # the archive is there; no download needed
    assert len(SOP(train=True, data_folder=str(folder))) == 18
    (folder / "Stanford_Online_Products").rename(folder / "moved")
    sop_archive.write_bytes(sop_archive.read_bytes()[:-10])
    with pytest.raises(OkcError, match="is corrupt or not the official archive"):
        SOP(data_folder=str(folder))


def test_sop_offline_says_where_to_put_the_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(OkcError, match=r"Stanford_Online_Products.tar.gz not found in .*download"):
        SOP(data_folder=str(tmp_path))
    closed = attrs.evolve(
        sop.ARCHIVES["SOP"], url="http://127.0.0.1:9/Stanford_Online_Products.tar.gz"
    )
    monkeypatch.setitem(sop.ARCHIVES, "SOP", closed)
    start = time.perf_counter()
    with pytest.raises(
        OkcError, match=rf"cannot download .* put Stanford_Online_Products.tar.gz .* in {tmp_path}"
    ):
        SOP(data_folder=str(tmp_path), download=True)
    assert time.perf_counter() - start < 5
    assert not list(tmp_path.iterdir())  # no partial file left behind


# --- RetrievalDataset: TorchOk's test CSVs --------------------------------------------------------

MATCHES = "query,relevant,scores\n0,6 1 7,4 3 2\n2,8 3 9,4 3 2\n4,10 5 11,4 3 2\n"
LABELS = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3]


def write_retrieval(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "match.csv").write_text(MATCHES)
    rows = ["id,image_path,label"] + [f"{i},img{i}.png,{label}" for i, label in enumerate(LABELS)]
    (folder / "paths.csv").write_text("\n".join(rows) + "\n")
    (folder / "gallery").mkdir()
    (folder / "gallery.csv").write_text(
        "id,image_path\n" + "".join(f"{i},gallery/g{i}.png\n" for i in range(8))
    )
    for i in range(12):
        Image.new("RGB", (6, 6), (i * 20, 0, 0)).save(folder / f"img{i}.png")
    for i in range(8):
        Image.new("RGB", (6, 6), (0, i * 20, 0)).save(folder / "gallery" / f"g{i}.png")


def test_retrieval_dataset_follows_torchoks_order_and_targets(tmp_path: Path) -> None:
    write_retrieval(tmp_path)
    ds = RetrievalDataset(
        data_folder=str(tmp_path), matches_csv_path="match.csv", img_list_csv_path="paths.csv"
    )
    assert len(ds) == 12
    # TorchOk's expected values (tests/base_tests/data/datasets/test_retrieval.py)
    assert ds.group_labels.tolist() == [0, 0, 1, 1, 0, 1, 2, 0, 2, 2, 1, 3]
    expected = torch.zeros(12, 3)
    for q in range(3):
        expected[3 + 3 * q : 6 + 3 * q, q] = torch.tensor([4.0, 3.0, 2.0])
    torch.testing.assert_close(ds.scores, expected)
    sample = ds[0]
    assert list(sample) == ["image", "index", "query_idxs", "scores", "group_labels"]
    assert sample["query_idxs"] == 0 and ds[5]["query_idxs"] == -1
    assert ds[3]["image"].shape == (3, 6, 6)
    with_gallery = RetrievalDataset(
        data_folder=str(tmp_path), matches_csv_path="match.csv", img_list_csv_path="paths.csv",
        gallery_list_csv_path="gallery.csv",
    )  # fmt: skip
    assert len(with_gallery) == 20
    assert with_gallery.group_labels[12:].tolist() == [-1] * 8
    assert with_gallery[18]["image"][1, 0, 0] == 120  # gallery/g6.png


def test_retrieval_dataset_errors_name_the_row(tmp_path: Path) -> None:
    write_retrieval(tmp_path)
    kwargs = {"data_folder": str(tmp_path), "img_list_csv_path": "paths.csv"}
    (tmp_path / "m.csv").write_text("query,relevant,scores\n0,6 1,4\n")
    with pytest.raises(OkcError, match=r"m.csv line 2 \(row 0\): 2 relevant ids need as many"):
        RetrievalDataset(matches_csv_path="m.csv", **kwargs)
    (tmp_path / "m.csv").write_text("query,relevant\n0,\n2,3\n")
    with pytest.raises(OkcError, match="query 0 has no relevant image.*use_query_without"):
        RetrievalDataset(matches_csv_path="m.csv", **kwargs)
    ds = RetrievalDataset(matches_csv_path="m.csv", use_query_without_relevants=True, **kwargs)
    assert ds.scores[:, 0].sum() == 0 and ds.scores[:, 1].tolist().count(1.0) == 1
    (tmp_path / "m.csv").write_text("query,relevant\n0,77\n")
    with pytest.raises(OkcError, match="image id 77 is not in"):
        RetrievalDataset(matches_csv_path="m.csv", **kwargs)


# --- the P×K sampler ------------------------------------------------------------------------------


class Labeled:
    """A dataset that only knows its labels."""

    def __init__(self, labels: list[int]) -> None:
        self.labels = torch.tensor(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def class_labels(self) -> torch.Tensor:
        return self.labels


LABELED = Labeled([c for c in range(9) for _ in range(2 + c % 4)] + [9])  # sizes 1..5


def pk_batches(order: BatchOrder) -> list[list[int]]:
    return list(order)


def assert_pk(batch: list[int], labels: torch.Tensor, p: int, k: int) -> None:
    counts = Counter(labels[batch].tolist())
    assert len(batch) == p * k and len(counts) == p and set(counts.values()) == {k}, counts


def test_pk_batches_hold_p_classes_of_k() -> None:
    sampler = PKSampler(dataset=LABELED, batch_size=12, samples_per_class=3, num_batches=20)
    order = BatchOrder(len(LABELED), batch_size=12, sampler=sampler, seed=1, drop_last=True)
    batches = pk_batches(order)
    assert len(batches) == 20
    for batch in batches:
        assert_pk(batch, LABELED.labels, 4, 3)
        # a class smaller than K repeats its samples as evenly as it can
        for c in Counter(LABELED.labels[batch].tolist()):
            size = int((LABELED.labels == c).sum())
            picked = Counter(i for i in batch if LABELED.labels[i] == c)
            assert max(picked.values()) <= -(-3 // size)
    order.set_epoch(1)
    assert pk_batches(order) != batches  # a new epoch draws new batches
    order.set_epoch(0)
    assert pk_batches(order) == batches  # ... and the same epoch the same ones


@pytest.mark.parametrize("drop_last", [True, False])
def test_pk_batches_shard_whole_batches_across_ranks(drop_last: bool) -> None:
    sampler = PKSampler(dataset=LABELED, batch_size=8, samples_per_class=2, num_batches=7)
    kwargs = {"batch_size": 8, "sampler": sampler, "seed": 3, "drop_last": drop_last,
              "pad": not drop_last}  # fmt: skip
    single = pk_batches(BatchOrder(len(LABELED), **kwargs))
    ranks = [pk_batches(BatchOrder(len(LABELED), rank=r, world_size=2, **kwargs)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == (3 if drop_last else 4)
    for r, batches in enumerate(ranks):
        for b, batch in enumerate(batches):
            assert_pk(batch, LABELED.labels, 4, 2)
            assert batch == single[(b * 2 + r) % len(single)]  # rank r reads batches r, r+2, ...


def test_pk_sampler_errors_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="samples_per_class: must divide dataloader.batch_size"):
        PKSampler(dataset=LABELED, batch_size=10, samples_per_class=4)
    with pytest.raises(ValueError, match="need 8 classes of 2, but the dataset has 2 classes"):
        PKSampler(dataset=Labeled([0, 0, 1, 1]), batch_size=16, samples_per_class=2)
    with pytest.raises(ValueError, match="samples_per_class: must be at least 2"):
        PKSampler(dataset=LABELED, batch_size=8, samples_per_class=1)
    with pytest.raises(OkcError, match="one class id per sample"):
        PKSampler(dataset=Labeled([[0, 1], [1, 0]]), batch_size=2, samples_per_class=2)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="batches of 4 samples, but batch_size is 8"):
        BatchOrder(len(LABELED), batch_size=8, sampler=PKSampler(dataset=LABELED, batch_size=4))


SHAPES_ITEM = """
dataset:
  name: Shapes
  params: {num_samples: 96, image_size: 16, num_classes: 6}
  transform: [{name: Normalize, params: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}]
dataloader: {batch_size: 12, num_workers: 2, drop_last: true}
sampler: {name: PKSampler, params: {samples_per_class: 3}}
"""


def shapes_item(**sampler_params: object) -> DataItem:
    from okc.config.load import experiment_from_data

    data = yaml.safe_load(SHAPES_ITEM)
    data["sampler"]["params"].update(sampler_params)
    exp = experiment_from_data(
        {"task": {"name": "ClassificationTask", "params": {"backbone_name": "test_resnet"}},
         "data": {"TRAIN": [data]}, "trainer": {}},
        [], name="pk",
    )  # fmt: skip
    return exp.data.TRAIN[0]


def test_pipeline_gives_pk_batches_and_resumes_exactly() -> None:
    item = shapes_item()
    assert check_data(_data_of(item)) == []
    shapes = Shapes(num_samples=96, image_size=16, num_classes=6)
    labels = torch.stack([shapes[i]["target"] for i in range(len(shapes))])
    pipeline = build_pipeline(item, phase=Phase.TRAIN, seed=7)
    pipeline.set_epoch(2)
    read = list(pipeline)
    batches = [b["index"].tolist() for b in read]
    assert len(batches) == 8  # 96 // 12
    for batch, b in zip(batches, read, strict=True):
        assert_pk(batch, labels, 4, 3)
        assert torch.equal(b["target"], labels[batch])
    # stop after 3 batches, save, resume in a fresh pipeline: the same remaining batches
    pipeline.set_epoch(2)
    it = iter(pipeline)
    seen = [next(it)["index"].tolist() for _ in range(3)]
    state = pipeline.state_dict()
    del it
    resumed = build_pipeline(item, phase=Phase.TRAIN, seed=7)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)
    assert seen + [b["index"].tolist() for b in resumed] == batches


def test_pipeline_sampler_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"sampler.params.samples_per_class"):
        build_pipeline(shapes_item(samples_per_class=5), phase=Phase.TRAIN)
    item = attrs.evolve(shapes_item(), sampler=attrs.evolve(shapes_item().sampler,
                                                             params={"batch_size": 3}))  # fmt: skip
    errors = check_data(_data_of(item))
    assert [e.path for e in errors] == ["data.TRAIN.0.sampler.params.batch_size"]
    assert "okc sets 'batch_size'" in errors[0].message
    with pytest.raises(ConfigErrors, match="okc sets 'batch_size'"):
        build_pipeline(item, phase=Phase.TRAIN)


def _data_of(item: DataItem) -> Data:
    return Data(TRAIN=(item,))


@pytest.mark.parametrize("num", [37, 38, 5])
def test_uneven_evaluation_shards_read_every_sample_once(num: int) -> None:
    """Without drop_last or padding, ranks together read each sample exactly once, even when the
    shards differ in size and the batch size divides neither (a rank used to read the padded
    order's extra samples in its last batch, and metrics counted them twice)."""
    read = []
    for rank in (0, 1):
        order = BatchOrder(num, batch_size=8, rank=rank, world_size=2)
        batches = list(order)
        assert len(batches) == len(order)
        read += [i for batch in batches for i in batch]
    assert sorted(read) == list(range(num))
