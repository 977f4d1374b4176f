"""``okc check`` for the data section: names and params, without building or touching files."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

from okc.config.bind import check_params, resolve
from okc.config.schema import ALL_PHASES, Data, DataItem
from okc.data.augment import check_ops
from okc.data.pipeline import setting_warnings
from okc.data.samplers import supplied
from okc.errors import ConfigError
from okc.registry import DATASETS, SAMPLERS, Registry


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
            errors += check_item(item, path=path)
            for message in setting_warnings(item, phase, path):
                warnings.warn(message, stacklevel=2)
    return errors


def check_item(item: DataItem, *, path: str) -> list[ConfigError]:
    errors: list[ConfigError] = []
    dataset = item.dataset
    errors += _component(DATASETS, dataset.name, dataset.params, f"{path}.dataset")
    errors += check_ops(dataset.transform, path=f"{path}.dataset.transform")
    errors += check_ops(dataset.augment, path=f"{path}.dataset.augment")
    if item.sampler is not None:
        errors += _component(
            SAMPLERS, item.sampler.name, item.sampler.params, f"{path}.sampler", supplied
        )
        if item.dataloader.shuffle:
            errors.append(
                ConfigError(
                    f"{path}.dataloader.shuffle", "a sampler sets the order: set shuffle: false"
                )
            )
    loader = item.dataloader
    for key, value, least in (
        ("batch_size", loader.batch_size, 1),
        ("num_workers", None if loader.num_workers == "auto" else loader.num_workers, 0),
        ("prefetch_factor", loader.prefetch_factor, 1),
    ):
        if value is not None and value < least:
            errors.append(
                ConfigError(f"{path}.dataloader.{key}", f"must be at least {least}, got {value}")
            )
    return errors


def _component(
    registry: Registry,
    name: str,
    params: Mapping[str, Any],
    path: str,
    injected: Callable[[Any], tuple[str, ...]] = lambda target: (),
) -> list[ConfigError]:
    """``injected(target)``: the arguments okc supplies to ``target`` itself."""
    try:
        target = resolve(registry, name, path=f"{path}.name")
    except ConfigError as err:
        return [err]
    return check_params(target, params, path=f"{path}.params", injected=injected(target))
