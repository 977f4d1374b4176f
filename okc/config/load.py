"""Read an experiment file, apply overrides, resolve interpolation, structure and validate.

The order is Hydra's: overrides change the raw file, then interpolations are resolved (so
``logger.log_dir=/tmp/x`` also moves everything that refers to ``${logger.log_dir}``), then the
result is structured into the frozen ``Experiment``.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from okc.config.convert import structure
from okc.config.interpolate import resolve
from okc.config.overrides import apply_overrides
from okc.config.schema import Experiment
from okc.config.yaml_loader import safe_load
from okc.errors import ConfigError, OkcError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SUFFIXES = (".yml", ".yaml", ".toml")


def read_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping in a YAML (safe_load: anchors and aliases, no tags) or TOML file."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise OkcError(f"{path}: an experiment is a .yml, .yaml or .toml file")
    if not path.is_file():
        raise OkcError(f"{path}: experiment file not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise OkcError(f"{where}: invalid YAML: {err.problem}") from None
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as err:
        raise OkcError(f"{path}: invalid {path.suffix[1:].upper()}: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise OkcError(
            f"{path}: the top level must be a mapping of sections, got a {type(data).__name__}"
        )
    return data


def experiment_from_data(
    data: Mapping[str, Any],
    overrides: Iterable[str] = (),
    *,
    name: str | None = None,
    now: dt.datetime | None = None,
) -> Experiment:
    """Overrides → interpolation → ``Experiment``. ``name`` is the default experiment name."""
    raw = apply_overrides(_plain(data), overrides)
    resolved = resolve(raw, now=now)
    if name is not None and resolved.get("name") is None:
        resolved["name"] = name
    exp = structure(resolved, Experiment)
    if exp.seed_params is not None and exp.task.seed_params is not None:
        raise ConfigError("task.seed_params", "seed_params is also set at the top level; keep one")
    return exp


def load_experiment(
    path: str | Path, overrides: Iterable[str] = (), *, now: dt.datetime | None = None
) -> Experiment:
    """Load ``path`` (.yml/.yaml/.toml) with ``key=value`` overrides applied.

    Bad input raises ``OkcError`` subclasses whose message names the file or key path.
    """
    path = Path(path)
    return experiment_from_data(read_file(path), overrides, name=path.stem, now=now)


def _plain(data: Any) -> Any:
    """A deep copy as plain dicts and lists (YAML aliases share objects; overrides must not)."""
    if isinstance(data, Mapping):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    if isinstance(data, (dt.date, dt.datetime)):
        return data.isoformat()  # YAML/TOML dates: okc fields that take them want strings
    return data
