"""Batches and task outputs are trees: dicts and lists whose leaves are tensors (or plain values).

Detection batches hold one box tensor per image, task outputs hold per-image dicts, so code that
moves, casts or detaches "every tensor in a batch" walks the tree instead of assuming a flat dict
of tensors. Small on purpose: dicts, lists and tuples are the only containers batches use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor


def map_tensors(fn: Callable[[Tensor], Any], tree: Any) -> Any:
    """``tree`` with ``fn`` applied to every tensor leaf; other leaves are kept as they are."""
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, Mapping):
        return {k: map_tensors(fn, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(map_tensors(fn, v) for v in tree)
    return tree


def first_tensor(tree: Any) -> Tensor | None:
    """The first tensor leaf of ``tree`` (depth first), or None."""
    if isinstance(tree, Tensor):
        return tree
    values = tree.values() if isinstance(tree, Mapping) else tree
    if isinstance(values, (list, tuple)) or isinstance(tree, Mapping):
        for value in values:
            found = first_tensor(value)
            if found is not None:
                return found
    return None
