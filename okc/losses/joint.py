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
from okc.config.bind import entry_problems, make, mapping_problems, raise_if
from okc.errors import ConfigError, at, join, under
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
    ) -> None:
        """Errors are relative to the ``joint_loss`` section (``losses.1.weight``)."""
        super().__init__()
        num = len(losses)
        tags = list(tags) if tags is not None else [None] * num
        weights = list(weights) if weights is not None else [None] * num
        assert len(mappings) == len(tags) == len(weights) == num, "one mapping/tag/weight per loss"
        raise_if(_rule_errors(tags, weights, normalize_weights))
        self.losses = nn.ModuleList(losses)
        self.mappings = tuple(dict(m) for m in mappings)
        self.tags = _unique_tags([type(m).__name__ for m in losses], tags)
        self.weights = _final_weights(weights, normalize_weights)

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
        """Raise a ConfigError per mapping entry (``joint_loss.losses.<i>.mapping.<arg>``) that
        names a key the task does not produce."""
        available = ", ".join(sorted(keys)) or "nothing"
        raise_if(
            [
                ConfigError(
                    join("joint_loss.losses", i, "mapping", arg),
                    f"the task's outputs have no '{key}'; it produces: {available}",
                )
                for i, mapping in enumerate(self.mappings)
                for arg, key in mapping.items()
                if key not in keys
            ]
        )


def check_joint_loss(spec: schema.JointLoss) -> list[ConfigError]:
    """Every problem in ``spec`` found before building (names, params, mappings, weights, tags),
    relative to the ``joint_loss`` section."""
    errors: list[ConfigError] = []
    for i, loss in enumerate(spec.losses):
        found = entry_problems(LOSSES, loss.name, loss.params)
        target = LOSSES.find(loss.name)
        if target is not None:
            forward = getattr(target, "forward", target)
            found += under("mapping", mapping_problems(forward, loss.mapping, loss.name))
        errors += under(join("losses", i), found)
    tags, weights = [loss.tag for loss in spec.losses], [loss.weight for loss in spec.losses]
    return errors + _rule_errors(tags, weights, spec.normalize_weights)


def build_joint_loss(spec: schema.JointLoss) -> JointLoss:
    """Check ``spec``, then build each loss from the registry (``torch.nn`` names included);
    errors at ``joint_loss.<key>``."""
    with at("joint_loss"):
        raise_if(check_joint_loss(spec))
        modules = []
        for i, loss in enumerate(spec.losses):
            with at(join("losses", i)):
                params = _tensors_from_lists(LOSSES.get(loss.name), loss.params)
                modules.append(make(LOSSES, loss.name, params))
        return JointLoss(
            modules,
            mappings=[loss.mapping for loss in spec.losses],
            tags=[loss.tag for loss in spec.losses],
            weights=[loss.weight for loss in spec.losses],
            normalize_weights=spec.normalize_weights,
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


def _rule_errors(
    tags: Sequence[str | None], weights: Sequence[float | None], normalize: bool
) -> list[ConfigError]:
    """The rules across losses: at least one, weights for all or none, distinct tags that leave
    ``loss`` to the total, weights that can be normalized."""
    if not tags:
        return [ConfigError("losses", "needs at least one loss")]
    errors: list[ConfigError] = []
    given = [w is not None for w in weights]
    if any(given) and not all(given):
        where = join("losses", given.index(False), "weight")
        errors.append(
            ConfigError(where, "set a weight for every loss or for none (then they weigh the same)")
        )
    seen: dict[str, int] = {}
    for i, tag in enumerate(tags):
        if tag == TOTAL:
            errors.append(
                ConfigError(f"losses.{i}.tag", f"'{TOTAL}' names the total; pick another tag")
            )
        elif tag in seen:
            errors.append(
                ConfigError(f"losses.{i}.tag", f"'{tag}' is already the tag of losses.{seen[tag]}")
            )
        if tag is not None:
            seen.setdefault(tag, i)
    if not errors and normalize and not sum(1.0 if w is None else float(w) for w in weights):
        errors.append(ConfigError("normalize_weights", "the weights sum to 0; cannot normalize"))
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


def _final_weights(weights: Sequence[float | None], normalize: bool) -> tuple[float, ...]:
    values = [1.0 if w is None else float(w) for w in weights]
    total = sum(values) if normalize else 1.0
    return tuple(w / total for w in values)
