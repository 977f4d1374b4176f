"""TorchOk's segmentation example: its SweetPepper dataset (download, archive layout, offline
behaviour) on a tiny archive written here, and its config file, checked and trained unchanged."""

from __future__ import annotations

import functools
import hashlib
import http.server
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import torch
from PIL import Image

from okc import api
from okc.config.load import experiment_from_data, read_file
from okc.data.datasets import sweet_pepper
from okc.data.datasets.sweet_pepper import SweetPepper
from okc.errors import OkcError

# TorchOk's examples/configs/segmentation_sweet_pepper.yaml at 1fa6f24, verbatim.
CONFIG = (
    Path(__file__).parent / "torchok" / "examples" / "configs" / "segmentation_sweet_pepper.yaml"
)


def make_sweet_pepper(root: Path, *, num_train: int = 4, num_valid: int = 2) -> None:
    """TorchOk's layout under ``root/sweet_pepper``: images, masks (0, 1, 2) and the two CSVs."""
    folder = root / "sweet_pepper"
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", num_train), ("valid", num_valid)):
        rows = ["image_path,mask"]
        for i in range(count):
            name = f"{split}_{i}.png"
            mask = np.zeros((48, 64), np.uint8)
            mask[10:30, 8 + i : 40 + i] = 1  # a fruit
            mask[4:10, 20:24] = 2  # its peduncle
            image = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
            image[mask == 1] = (200, 30, 20)
            image[mask == 2] = (40, 160, 40)
            Image.fromarray(image).save(folder / "images" / name)
            Image.fromarray(mask).save(folder / "masks" / name)
            rows.append(f"images/{name},masks/{name}")
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``sweet_pepper.tar.gz`` as TorchOk's server has it, with ``ARCHIVE`` pointing at its md5."""
    source = tmp_path / "source"
    make_sweet_pepper(source)
    path = tmp_path / "server" / "sweet_pepper.tar.gz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source / "sweet_pepper", arcname="sweet_pepper")
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    monkeypatch.setattr(sweet_pepper, "ARCHIVE", attrs.evolve(sweet_pepper.ARCHIVE, md5=md5))
    return path


def test_reads_torchoks_layout_from_the_archive(archive: Path, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / archive.name).write_bytes(archive.read_bytes())
    train = SweetPepper(data_folder=str(folder))  # unpacks the archive found there
    valid = SweetPepper(train=False, data_folder=str(folder))
    assert (len(train), len(valid)) == (4, 2)
    sample = train[1]
    assert sample["image"].shape == (3, 48, 64) and sample["image"].dtype == torch.uint8
    assert sample["mask"].dtype == torch.int64 and sample["mask"].unique().tolist() == [0, 1, 2]
    assert tuple(sample["image"][:, 20, 20]) == (200, 30, 20)  # the fruit's pixels, aligned
    assert sample["mask"][20, 20] == 1
    assert "mask" not in SweetPepper(data_folder=str(folder), test_mode=True)[0]


def test_downloads_checks_md5_and_unpacks(archive: Path, tmp_path: Path, monkeypatch) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/sweet_pepper.tar.gz"
        monkeypatch.setattr(sweet_pepper, "ARCHIVE", attrs.evolve(sweet_pepper.ARCHIVE, url=url))
        target = tmp_path / "downloaded"
        assert len(SweetPepper(data_folder=str(target), download=True)) == 4
        assert (target / "sweet_pepper.tar.gz").is_file()
        assert (target / "sweet_pepper" / "valid.csv").is_file()
    finally:
        server.shutdown()


def test_corrupt_archive_is_refused(archive: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sweet_pepper, "ARCHIVE", attrs.evolve(sweet_pepper.ARCHIVE, md5="0" * 32))
    (tmp_path / archive.name).write_bytes(archive.read_bytes())
    with pytest.raises(OkcError, match="corrupt or not the official archive"):
        SweetPepper(data_folder=str(tmp_path))


def test_missing_archive_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(OkcError) as err:
        SweetPepper(data_folder=str(tmp_path))
    message = str(err.value)
    assert f"sweet_pepper.tar.gz not found in {tmp_path}; set download: true" in message
    assert "https://torchok-hub.s3.eu-west-1.amazonaws.com/sweet_pepper.tar.gz" in message
    assert "65021e5fad5fe286b3c2bac7753d6e9d" in message


def test_offline_download_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = attrs.evolve(sweet_pepper.ARCHIVE, url="http://127.0.0.1:9/sweet_pepper.tar.gz")
    monkeypatch.setattr(sweet_pepper, "ARCHIVE", closed)
    start = time.perf_counter()
    with pytest.raises(OkcError, match=r"cannot download .* put sweet_pepper.tar.gz .* in "):
        SweetPepper(data_folder=str(tmp_path), download=True)
    assert time.perf_counter() - start < 5
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_a_mask_with_an_unknown_class_names_its_file(tmp_path: Path) -> None:
    make_sweet_pepper(tmp_path)
    bad = tmp_path / "sweet_pepper" / "masks" / "train_1.png"
    mask = np.array(Image.open(bad))
    mask[0, 0] = 3
    Image.fromarray(mask).save(bad)
    dataset = SweetPepper(data_folder=str(tmp_path))
    dataset[0]
    with pytest.raises(OkcError, match=r"mask .*masks/train_1.png \(.*train.csv line 3"):
        dataset[1]


# --- the config file ------------------------------------------------------------------------------

# What the config names that issue 12 builds (callbacks, augmentations; its TensorBoardLogger okc
# has already). While one is missing, ``okc check`` reports it and the test strips exactly that
# from the loaded config; once it exists the check stops reporting it and the test runs the
# config with it.
ISSUE_12 = {
    ("callback", "ModelCheckpointWithOnnx"),
    ("callback", "FinalizeLogger"),
    ("augmentation", "GridDistortion"),
    ("param", "ElasticTransform.border_mode"),
}


def _still_missing(data: dict[str, Any], error: Any) -> tuple[tuple[str, str], list[Any]]:
    """What an error of ``okc check`` is about, and the key path to strip for it."""
    parts = [int(p) if p.isdigit() else p for p in error.path.split(".")]
    node = data
    for part in parts[:-1]:
        node = node[part]
    if parts[0] == "callbacks" and parts[-1] == "name":
        return ("callback", node["name"]), parts[:-1]
    if "augment" in parts and parts[-1] == "name":
        return ("augmentation", node["name"]), parts[:-1]
    if "augment" in parts and parts[-2] == "params":
        owner = data
        for part in parts[:-2]:
            owner = owner[part]
        return ("param", f"{owner['name']}.{parts[-1]}"), parts
    return ("other", error.path), parts


def _strip(data: dict[str, Any], path: list[Any]) -> None:
    node = data
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]


def _without_missing_components(data: dict[str, Any]) -> dict[str, Any]:
    errors = api.check(experiment_from_data(data, ()))
    found = [_still_missing(data, e) for e in errors]
    unexpected = [
        str(e) for e, (what, _) in zip(errors, found, strict=True) if what not in ISSUE_12
    ]
    assert not unexpected, unexpected  # everything else in the file must already work
    # deepest and last first, so that list indices of the remaining paths stay valid
    for _, path in sorted(found, key=lambda f: [str(p).zfill(4) for p in f[1]], reverse=True):
        _strip(data, path)
    return data


def test_config_passes_check_but_for_issue_12_components() -> None:
    data = read_file(CONFIG)
    stripped = _without_missing_components(read_file(CONFIG))
    assert api.check(experiment_from_data(stripped, ())) == []
    # what was stripped is only ever one of ISSUE_12's names, never the segmentation parts
    assert stripped["task"] == data["task"] and stripped["metrics"] == data["metrics"]
    assert stripped["joint_loss"] == data["joint_loss"]


@pytest.mark.slow
def test_config_trains_on_a_local_copy_of_the_data(tmp_path: Path) -> None:
    """The config as written (hrnet_w18 at 256x256, its augmentations, losses, metric and ONNX
    checkpoint callback) on batches of one image: two steps, one validation batch and one ONNX
    export (``save_last`` off: ``last.onnx`` would export the same weights a second time)."""
    make_sweet_pepper(tmp_path / "data", num_train=2, num_valid=1)
    data = _without_missing_components(read_file(CONFIG))
    overrides = [
        f"data.TRAIN.0.dataset.params.data_folder={tmp_path / 'data'}",
        f"data.VALID.0.dataset.params.data_folder={tmp_path / 'data'}",
        "data.TRAIN.0.dataloader.batch_size=1",
        "data.VALID.0.dataloader.batch_size=1",
        "task.params.backbone_params.pretrained=false",
        "trainer.accelerator=cpu",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        f"logger.log_dir={tmp_path / 'logs'}",
    ]
    onnx = [i for i, c in enumerate(data["callbacks"]) if c["name"] == "ModelCheckpointWithOnnx"]
    overrides += [f"callbacks.{i}.params.save_last=false" for i in onnx]
    result = api.fit(experiment_from_data(data, overrides, name="sweet_pepper"))
    assert result.global_step == 2
    assert 0.0 <= result.metrics["valid/JaccardIndex"] <= 1.0
    assert np.isfinite(result.metrics["train/loss"]) and np.isfinite(result.metrics["valid/loss"])
    assert str(result.run_dir).startswith(str(tmp_path))
    if onnx:  # the callback monitored valid/JaccardIndex and exported its checkpoint
        assert result.best_checkpoint is not None
        assert result.best_checkpoint.with_suffix(".onnx").is_file()
