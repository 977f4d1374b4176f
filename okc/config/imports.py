"""``imports:``: the user's own component modules, imported before any name is looked up."""

from __future__ import annotations

import importlib

from okc.config.schema import Experiment
from okc.errors import ConfigError


def import_user_modules(exp: Experiment) -> None:
    """Import ``exp.imports`` so the components they register can be found by name."""
    for i, module in enumerate(exp.imports):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(f"imports.{i}", f"cannot import '{module}': {err}") from err
