"""Cases of the components the classification core registers (see README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import torch
from datafiles import cifar10_files, cifar_batch, write_cifar_archive, write_image, write_mask

from contracts.runners import Case, make

# --- losses ---------------------------------------------------------------------------------------


def _logits_and_classes() -> dict[str, Any]:
    return {"input": torch.randn(4, 3, 8, 8, requires_grad=True),
            "target": torch.randint(0, 3, (4, 8, 8))}  # fmt: skip


def _pairs() -> dict[str, Any]:
    return {"emb1": torch.randn(4, 8, requires_grad=True), "emb2": torch.randn(4, 8),
            "R": (torch.arange(4)[:, None] % 2 == torch.arange(4) % 2).float()}  # fmt: skip


LOSSES = {
    ("losses", "BCEWithLogitsLoss"): Case(
        inputs=lambda: {
            "input": torch.randn(4, 3, requires_grad=True),
            "target": torch.randint(0, 2, (4, 3)).float(),
        }
    ),
    ("losses", "DiceLoss"): Case(params={"mode": "multiclass"}, inputs=_logits_and_classes),
    ("losses", "ContrastiveLoss"): Case(params={"margin": 1.0}, inputs=_pairs),
    ("losses", "NT_XentLoss"): Case(
        inputs=lambda: {"emb1": torch.randn(4, 8, requires_grad=True), "emb2": torch.randn(4, 8)}
    ),
}

# --- model parts ----------------------------------------------------------------------------------

MODEL_PARTS = {
    **{
        ("backbones", name): Case()
        for name in ("test_resnet", "test_efficientnet", "test_convnext", "test_vit")
    },
    ("necks", "FPN"): Case(),
    ("necks", "UNet"): Case(),
    ("necks", "UnetNeck"): Case(),
    ("poolings", "Pooling"): Case(),
    ("poolings", "GeM"): Case(),
    ("poolings", "SPOC"): Case(),
    ("heads", "ClassificationHead"): Case(params={"num_classes": 3}),
    ("heads", "LinearHead"): Case(params={"out_channels": 5, "normalize": True}),
    ("heads", "ArcFaceHead"): Case(params={"num_classes": 3}),
    ("heads", "SegmentationHead"): Case(params={"num_classes": 3}),
}

# --- datasets -------------------------------------------------------------------------------------


def _check_sample(dataset: Any, *, keys: tuple[str, ...] = ()) -> None:
    assert len(dataset) > 0
    sample = dataset[0]
    image = sample["image"]
    assert image.dtype == torch.uint8 and image.dim() == 3, image.shape
    assert all(k in sample for k in ("index", *keys)), sorted(sample)


def _cifar(name: str, folder: str, files: dict[str, dict]) -> Any:
    from okc.data.datasets import cifar

    def check(dataset_name: str, case: Case, *, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch, **_: Any) -> None:  # fmt: skip
        archive = tmp_path / cifar.ARCHIVES[name].filename
        md5 = write_cifar_archive(archive, folder, files)
        monkeypatch.setitem(cifar.ARCHIVES, name, attrs.evolve(cifar.ARCHIVES[name], md5=md5))
        dataset = make("datasets", dataset_name, attrs.evolve(
            case, params={"data_folder": str(tmp_path)}))  # fmt: skip
        _check_sample(dataset, keys=("target",))

    return check


def _csv_images(tmp_path: Path, *, masks: bool = False) -> Path:
    rows = ["image_path,mask_path,label" if masks else "image_path,label"]
    for i in range(4):
        write_image(tmp_path / "img" / f"{i}.png", (40 * i, 20, 30))
        if masks:
            write_mask(tmp_path / "mask" / f"{i}.png", np.full((6, 5), i % 3))
            rows.append(f"img/{i}.png,mask/{i}.png,{i % 2}")
        else:
            rows.append(f"img/{i}.png,{i % 2}")
    (tmp_path / "ann.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def _check_csv_classification(name: str, case: Case, *, tmp_path: Path, **_: Any) -> None:
    folder = _csv_images(tmp_path)
    dataset = make("datasets", name, attrs.evolve(case, params={
        "data_folder": str(folder), "annotation_path": "ann.csv", "num_classes": 2}))  # fmt: skip
    _check_sample(dataset, keys=("target",))


def _check_csv_segmentation(name: str, case: Case, *, tmp_path: Path, **_: Any) -> None:
    folder = _csv_images(tmp_path, masks=True)
    dataset = make("datasets", name, attrs.evolve(case, params={
        "data_folder": str(folder), "annotation_path": "ann.csv"}))  # fmt: skip
    _check_sample(dataset, keys=("mask",))
    assert dataset[0]["mask"].shape == dataset[0]["image"].shape[1:]


def _check_image_folder(name: str, case: Case, *, tmp_path: Path, **_: Any) -> None:
    for i in range(4):
        write_image(tmp_path / ("cat" if i % 2 else "dog") / f"{i}.png", (40 * i, 0, 0))
    dataset = make("datasets", name, attrs.evolve(case, params={"data_folder": str(tmp_path)}))
    _check_sample(dataset, keys=("target",))


def _check_shapes(name: str, case: Case, **_: Any) -> None:
    dataset = make("datasets", name, attrs.evolve(case, params={
        "num_samples": 4, "image_size": 16, "with_mask": True}))  # fmt: skip
    _check_sample(dataset, keys=("target", "mask"))


_CIFAR100 = {"train": cifar_batch(4, 1, {"fine_labels": 100, "coarse_labels": 20}),
             "test": cifar_batch(2, 2, {"fine_labels": 100, "coarse_labels": 20})}  # fmt: skip
DATASETS = {
    ("datasets", "CIFAR10"): Case(check=_cifar("CIFAR10", "cifar-10-batches-py", cifar10_files())),
    ("datasets", "CIFAR100"): Case(check=_cifar("CIFAR100", "cifar-100-python", _CIFAR100)),
    ("datasets", "ImageClassificationDataset"): Case(check=_check_csv_classification),
    ("datasets", "ImageSegmentationDataset"): Case(check=_check_csv_segmentation),
    ("datasets", "ImageFolder"): Case(check=_check_image_folder),
    ("datasets", "Shapes"): Case(check=_check_shapes),
}

# --- samplers, callbacks, loggers, schedulers -----------------------------------------------------


def _check_weighted_sampler(name: str, case: Case, *, tmp_path: Path, **_: Any) -> None:
    (tmp_path / "w.csv").write_text("weight\n" + "\n".join(["1", "0", "3"] * 3 + ["1"]) + "\n")
    sampler = make("samplers", name, attrs.evolve(case, params={
        "annotation_path": "w.csv", "data_folder": str(tmp_path)}))  # fmt: skip
    order = sampler.order(10, torch.Generator().manual_seed(0))
    assert len(order) == 10 and 1 not in order.tolist() and 4 not in order.tolist()  # weight 0


OTHERS = {
    ("samplers", "WeightedSampler"): Case(check=_check_weighted_sampler),
    ("callbacks", "EarlyStopping"): Case(params={"monitor": "valid/loss"}),
    ("callbacks", "LearningRateMonitor"): Case(),
    ("callbacks", "ModelCheckpoint"): Case(params={"monitor": "valid/loss", "save_top_k": 1}),
    ("callbacks", "ProgressBar"): Case(),
    ("callbacks", "RichProgressBar"): Case(),
    ("callbacks", "TQDMProgressBar"): Case(params={"refresh_rate": 5}),
    ("loggers", "CSVLogger"): Case(),
    ("loggers", "JSONLLogger"): Case(),
    ("loggers", "TensorBoardLogger"): Case(),
    ("schedulers", "CosineAnnealingWarmup"): Case(params={"T_max": 5, "warmup_iters": 2}),
    ("schedulers", "CosineLRScheduler"): Case(params={"t_initial": 5}),
    ("schedulers", "MultiStepLRScheduler"): Case(params={"decay_t": [2, 4]}),
    ("schedulers", "PlateauLRScheduler"): Case(),
    ("schedulers", "PolyLRScheduler"): Case(params={"t_initial": 5}),
    ("schedulers", "StepLRScheduler"): Case(params={"decay_t": 2}),
    ("schedulers", "TanhLRScheduler"): Case(params={"t_initial": 5}),
    ("schedulers", "WSDLRScheduler"): Case(params={"t_initial": 5, "decay_t": 2}),
}

# --- tasks ----------------------------------------------------------------------------------------


def _check_classification_task(name: str, case: Case, **_: Any) -> None:
    task = make("tasks", name, attrs.evolve(case, params={
        "backbone_name": "test_resnet", "pooling_name": "Pooling",
        "head_name": "ClassificationHead", "head_params": {"num_classes": 3}}))  # fmt: skip
    out = task.forward_with_gt({"image": torch.rand(2, 3, 16, 16), "target": torch.tensor([0, 2])})
    assert set(task.output_keys) <= set(out) and out["prediction"].shape == (2, 3)


TASKS = {("tasks", "ClassificationTask"): Case(check=_check_classification_task)}

CASES: dict[tuple[str, str], Case] = {
    **LOSSES, **MODEL_PARTS, **DATASETS, **OTHERS, **TASKS,
}  # fmt: skip
