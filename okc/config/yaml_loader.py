"""YAML reading: ``yaml.safe_load`` semantics plus YAML 1.2 floats.

PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a *string*; ``lr: 1e-3`` would then reach the
optimizer as text. Like OmegaConf, okc reads such scalars as floats. Nothing else changes: no tags,
no Python objects (this is a SafeLoader).
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class Loader(yaml.SafeLoader):
    pass


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
# Replace the float resolver (keyed by first character) with the wider pattern.
Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def safe_load(text: str) -> Any:
    return yaml.load(text, Loader=Loader)
