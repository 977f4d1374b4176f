"""``okc check`` for the data section: names and params, without building or touching files."""

from __future__ import annotations

import warnings

from okc.config.bind import entry_problems
from okc.config.schema import ALL_PHASES, Data, DataItem
from okc.data.augment import check_ops
from okc.data.pipeline import setting_warnings
from okc.data.samplers import supplied
from okc.errors import ConfigError, under
from okc.registry import DATASETS, SAMPLERS


def check_data(data: Data) -> list[ConfigError]:
    """Every problem in ``data`` that can be found without reading data: unknown dataset,
    augmentation and sampler names (with did-you-mean), params their components do not take or
    need, nested OneOf/Compose transforms, and dataloader values. Also warns about settings that
    are allowed but probably not meant (``drop_last`` outside TRAIN).
    """
    errors: list[ConfigError] = []
    for phase in ALL_PHASES:
        for i, item in enumerate(data[phase]):
            path = f"data.{phase.name}.{i}"
            errors += under(path, check_item(item))
            for warning in under(path, setting_warnings(item, phase)):
                warnings.warn(str(warning), stacklevel=2)
    return errors


def check_item(item: DataItem) -> list[ConfigError]:
    """The problems of one data item, relative to it (``dataset.params.num_classes``)."""
    dataset, sampler, loader = item.dataset, item.sampler, item.dataloader
    errors = under("dataset", entry_problems(DATASETS, dataset.name, dataset.params))
    errors += under("dataset.transform", check_ops(dataset.transform))
    errors += under("dataset.augment", check_ops(dataset.augment))
    if sampler is not None:
        target = SAMPLERS.find(sampler.name)
        injected = supplied(target) if target is not None else ()
        errors += under("sampler", entry_problems(SAMPLERS, sampler.name, sampler.params, injected))
        if loader.shuffle:
            errors.append(
                ConfigError("dataloader.shuffle", "a sampler sets the order: set shuffle: false")
            )
    for key, value, least in (
        ("batch_size", loader.batch_size, 1),
        ("num_workers", None if loader.num_workers == "auto" else loader.num_workers, 0),
        ("prefetch_factor", loader.prefetch_factor, 1),
    ):
        if value is not None and value < least:
            errors.append(
                ConfigError(f"dataloader.{key}", f"must be at least {least}, got {value}")
            )
    return errors
