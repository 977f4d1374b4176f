"""JointLoss: the weighted sum of the configured losses, each fed from the task's outputs.

The forward is written for ``torch.compile(fullgraph=True)``: weights, tags and mappings are plain
Python constants fixed at build time and nothing branches on tensor values. Key checks therefore do
not run per step: the engine calls ``check_outputs`` once with the keys the task produces.

Every loss is reported, not only tagged ones (TorchOk dropped untagged values): an untagged loss
is named after its class, with ``_1``, ``_2``... when a name repeats. The tag ``loss`` is reserved
for the total, which TorchOk silently overwrote.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from okc.config import schema
from okc.config.bind import build, check_mapping, check_params, raise_if
from okc.errors import ConfigError, OkcError
from okc.registry import LOSSES

TOTAL = "loss"  # the key of the total in logs and step outputs


class JointLoss(nn.Module):
    """Weighted sum of losses; ``parts`` holds each loss's raw (unweighted) value by tag."""

    def __init__(
        self,
        losses: Sequence[nn.Module],
        *,
        mappings: Sequence[Mapping[str, str]],
        tags: Sequence[str | None] | None = None,
        weights: Sequence[float | None] | None = None,
        normalize_weights: bool = True,
        path: str = "joint_loss",
    ) -> None:
        super().__init__()
        num = len(losses)
        if not num:
            raise ConfigError(f"{path}.losses", "needs at least one loss")
        tags = list(tags) if tags is not None else [None] * num
        weights = list(weights) if weights is not None else [None] * num
        assert len(mappings) == len(tags) == len(weights) == num, "one mapping/tag/weight per loss"
        raise_if(_weight_errors(weights, path) + _tag_errors(tags, path))
        self.losses = nn.ModuleList(losses)
        self.mappings = tuple(dict(m) for m in mappings)
        self.tags = _unique_tags([type(m).__name__ for m in losses], tags)
        self.weights = _final_weights(weights, normalize_weights, path)
        self.path = path

    def forward(
        self, outputs: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(total, raw value by tag)``; ``outputs`` must hold ``required_keys`` (unchecked)."""
        parts: dict[str, torch.Tensor] = {}
        total = None
        for tag, loss, mapping, weight in zip(
            self.tags, self.losses, self.mappings, self.weights, strict=True
        ):
            value = loss(**{arg: outputs[key] for arg, key in mapping.items()})
            parts[tag] = value
            total = value * weight if total is None else total + value * weight
        assert total is not None
        return total, parts

    def __getitem__(self, tag: str) -> nn.Module:
        try:
            return self.losses[self.tags.index(tag)]
        except ValueError:
            raise KeyError(f"no loss tagged '{tag}'; tags: {', '.join(self.tags)}") from None

    @functools.cached_property
    def required_keys(self) -> frozenset[str]:
        """The task output keys the losses read."""
        return frozenset(k for m in self.mappings for k in m.values())

    def check_outputs(self, keys: Collection[str]) -> None:
        """Raise a ConfigError per mapping entry that names a key the task does not produce."""
        available = ", ".join(sorted(keys)) or "nothing"
        raise_if(
            [
                ConfigError(
                    f"{self.path}.losses.{i}.mapping.{arg}",
                    f"the task's outputs have no '{key}'; it produces: {available}",
                )
                for i, mapping in enumerate(self.mappings)
                for arg, key in mapping.items()
                if key not in keys
            ]
        )


def check_joint_loss(spec: schema.JointLoss, *, path: str = "joint_loss") -> list[ConfigError]:
    """Every problem in ``spec`` found before building: names, params, mappings, weights."""
    errors: list[ConfigError] = []
    if not spec.losses:
        errors.append(ConfigError(f"{path}.losses", "needs at least one loss"))
    for i, loss in enumerate(spec.losses):
        where = f"{path}.losses.{i}"
        target = LOSSES.find(loss.name)
        if target is None:
            errors.append(ConfigError(f"{where}.name", LOSSES.unknown_message(loss.name)))
            continue
        errors += check_params(target, loss.params, path=f"{where}.params")
        forward = getattr(target, "forward", target)
        errors += check_mapping(forward, loss.mapping, path=f"{where}.mapping", what=loss.name)
    weights = [loss.weight for loss in spec.losses]
    errors += _weight_errors(weights, path) + _tag_errors([loss.tag for loss in spec.losses], path)
    if not errors:
        try:
            _final_weights(weights, spec.normalize_weights, path)
        except OkcError as err:
            errors.append(err if isinstance(err, ConfigError) else ConfigError(path, str(err)))
    return errors


def build_joint_loss(spec: schema.JointLoss, *, path: str = "joint_loss") -> JointLoss:
    """Check ``spec``, then build each loss from the registry (``torch.nn`` names included)."""
    raise_if(check_joint_loss(spec, path=path))
    modules = [
        build(
            LOSSES,
            loss.name,
            _tensors_from_lists(LOSSES.get(loss.name), loss.params),
            name_path=f"{path}.losses.{i}.name",
            params_path=f"{path}.losses.{i}.params",
        )
        for i, loss in enumerate(spec.losses)
    ]
    return JointLoss(
        modules,
        mappings=[loss.mapping for loss in spec.losses],
        tags=[loss.tag for loss in spec.losses],
        weights=[loss.weight for loss in spec.losses],
        normalize_weights=spec.normalize_weights,
        path=path,
    )


# --- helpers --------------------------------------------------------------------------------------


def _tensors_from_lists(target: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """Lists given for tensor arguments (``CrossEntropyLoss.weight``) become float tensors.

    A config file cannot write a tensor, and torch's losses take class weights only as tensors.
    """
    try:
        hints = typing.get_type_hints(target.__init__)
    except Exception:  # unresolvable annotations: leave the values alone
        return dict(params)
    return {
        k: torch.tensor(v, dtype=torch.get_default_dtype())
        if isinstance(v, (list, tuple)) and "Tensor" in str(hints.get(k, ""))
        else v
        for k, v in params.items()
    }


def _weight_errors(weights: Sequence[float | None], path: str) -> list[ConfigError]:
    given = [w is not None for w in weights]
    if any(given) and not all(given):
        first = given.index(False)
        return [
            ConfigError(
                f"{path}.losses.{first}.weight",
                "set a weight for every loss or for none (then they weigh the same)",
            )
        ]
    return []


def _tag_errors(tags: Sequence[str | None], path: str) -> list[ConfigError]:
    errors: list[ConfigError] = []
    seen: dict[str, int] = {}
    for i, tag in enumerate(tags):
        if tag is None:
            continue
        if tag == TOTAL:
            errors.append(
                ConfigError(
                    f"{path}.losses.{i}.tag", f"'{TOTAL}' names the total; pick another tag"
                )
            )
        elif tag in seen:
            errors.append(
                ConfigError(
                    f"{path}.losses.{i}.tag", f"'{tag}' is already the tag of losses.{seen[tag]}"
                )
            )
        seen.setdefault(tag, i)
    return errors


def _unique_tags(names: Sequence[str], tags: Sequence[str | None]) -> tuple[str, ...]:
    """Given tags as they are; untagged losses get their class name, suffixed to stay unique."""
    used = {t for t in tags if t is not None} | {TOTAL}
    result: list[str] = []
    for name, tag in zip(names, tags, strict=True):
        if tag is None:
            tag, n = name, 0
            while tag in used:
                n += 1
                tag = f"{name}_{n}"
            used.add(tag)
        result.append(tag)
    return tuple(result)


def _final_weights(
    weights: Sequence[float | None], normalize: bool, path: str
) -> tuple[float, ...]:
    values = [1.0 if w is None else float(w) for w in weights]
    if normalize:
        total = sum(values)
        if total == 0:
            raise ConfigError(f"{path}.normalize_weights", "the weights sum to 0; cannot normalize")
        values = [w / total for w in values]
    return tuple(values)
