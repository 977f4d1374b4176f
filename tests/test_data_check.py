"""check_data: names, params and nested transforms checked without building or reading data."""

from __future__ import annotations

from typing import Any

import pytest

from okc.config.schema import Augmentation, Component, Data, DataItem, DataLoader, Dataset
from okc.data import check_data


def messages(**phases: Any) -> list[str]:
    return [str(e) for e in check_data(Data(**phases))]


def item(
    name: str = "ImageClassificationDataset",
    params: dict[str, Any] | None = None,
    *,
    transform: tuple = (),
    augment: tuple = (),
    **loader: Any,
) -> DataItem:
    params = (
        {"data_folder": "/does/not/exist", "annotation_path": "x.csv"} if params is None else params
    )
    return DataItem(
        dataset=Dataset(name=name, params=params, transform=transform, augment=augment),
        dataloader=DataLoader(**loader),
    )


def test_a_good_config_has_no_errors() -> None:
    augment = (
        Augmentation("HorizontalFlip"),
        Augmentation(
            "OneOf", {"transforms": [{"name": "JpegCompression"}, {"name": "GaussNoise"}]}
        ),
        Augmentation("RandomCrop", {"size": [32, 32], "padding": 4}),
        Augmentation("RandomErasing", {"p": 0.3}),  # a Kornia name
    )
    transform = (Augmentation("Resize", {"height": 32, "width": 32}), Augmentation("ToTensorV2"))
    assert messages(TRAIN=(item(transform=transform, augment=augment, shuffle=True),)) == []


def test_unknown_augmentation_suggests_the_name() -> None:
    augment = (
        Augmentation("VerticalFlip"),
        Augmentation("Normalize"),
        Augmentation("HorizntalFlip"),
    )
    assert messages(TRAIN=(item(augment=augment),)) == [
        "data.TRAIN.0.dataset.augment.2.name: unknown augmentation 'HorizntalFlip', "
        "did you mean 'HorizontalFlip'?"
    ]


def test_params_the_op_does_not_take_are_named_also_inside_one_of() -> None:
    augment = (
        Augmentation("RandomCrop", {"height": 8, "widht": 8}),
        Augmentation(
            "OneOf",
            {
                "p": 0.3,
                "transforms": [
                    {"name": "GaussNoise", "params": {"var_limt": [1, 2]}},
                    {"name": "Blurr"},
                ],
            },
        ),
    )
    found = messages(TRAIN=(item(augment=augment),))
    assert found == [
        "data.TRAIN.0.dataset.augment.0.params.widht: RandomCrop has no parameter 'widht', "
        "did you mean 'width'?",
        "data.TRAIN.0.dataset.augment.1.params.transforms.0.params.var_limt: GaussNoise has no "
        "parameter 'var_limt', did you mean 'var_limit'?",
        "data.TRAIN.0.dataset.augment.1.params.transforms.1.name: unknown augmentation 'Blurr', "
        "did you mean 'Blur'?",
    ]


def test_dataset_names_and_params() -> None:
    found = messages(
        TRAIN=(item("CIFAR11", {}),),
        VALID=(
            item("CIFAR10", {"trian": False}),
            item("ImageClassificationDataset", {"num_classes": "ten"}),
        ),
    )
    assert found[0].startswith("data.TRAIN.0.dataset.name: unknown dataset 'CIFAR11', did you mean")
    assert found[1] == (
        "data.VALID.0.dataset.params.trian: CIFAR10 has no parameter 'trian', did you mean 'train'?"
    )
    assert found[2] == "data.VALID.1.dataset.params.num_classes: expected int, got 'ten'"


def test_kornia_params_are_checked_too() -> None:
    augment = (Augmentation("RandomErasing", {"scale": [0.1, 0.2], "vlaue": 1.0}),)
    assert messages(TRAIN=(item(augment=augment),)) == [
        "data.TRAIN.0.dataset.augment.0.params.vlaue: RandomErasing has no parameter 'vlaue', "
        "did you mean 'value'?"
    ]


def test_sampler_and_loader_values() -> None:
    sampler = Component("WeightedSampler", {"annotation_path": "w.csv", "weight_col": "w"})
    found = messages(
        TRAIN=(DataItem(item().dataset, DataLoader(shuffle=True, batch_size=0), sampler),)
    )
    assert found == [
        "data.TRAIN.0.sampler.params.weight_col: WeightedSampler has no parameter 'weight_col', "
        "did you mean 'weight_column'?",
        "data.TRAIN.0.dataloader.shuffle: a sampler sets the order: set shuffle: false",
        "data.TRAIN.0.dataloader.batch_size: must be at least 1, got 0",
    ]


def test_drop_last_outside_train_warns_not_fails() -> None:
    with pytest.warns(UserWarning, match=r"data.TEST.0.dataloader.drop_last: true in TEST"):
        assert messages(TEST=(item(drop_last=True),)) == []


def test_malformed_nested_entries() -> None:
    augment = (Augmentation("OneOf", {"transforms": [{"params": {}}, {"name": "Blur", "p": 1}]}),)
    assert messages(TRAIN=(item(augment=augment),)) == [
        "data.TRAIN.0.dataset.augment.0.params.transforms.0: expected a mapping with 'name' "
        "(and optional 'params')",
        "data.TRAIN.0.dataset.augment.0.params.transforms.1.p: unknown key; an entry has name and params",
    ]
