"""``task.load_checkpoint``: build the model's weights from a base checkpoint plus per-module files.

Semantics are the spec's ("Specifying load_checkpoint"), which TorchOk's code only partly met:

1. The base checkpoint's keys are model keys. Each override ``name: file`` supplies the weights
   under ``name`` (a module or a single tensor). A key of that file is placed at the first model
   key under ``name`` among: the key itself (absolute), ``name.key`` (relative), then
   ``ancestor.key`` for each module above ``name``, deepest first, so a leaf override
   (``head.linear.2``) can point at a file written for its parent (``linear.2``); a file holding a
   bare tensor fills a tensor ``name``. Keys that land on model keys outside ``name`` are skipped
   (the override takes only what is under its name, so a whole-model file can supply one module);
   keys that land nowhere in the model are unexpected. (TorchOk only prefixed, so the override
   ``head.linear.2`` produced ``head.linear.2.linear.2``.)
2. Overrides apply from shallow to deep (config order within a depth): deeper overrides shallower,
   every override beats the base, and keys an override lacks keep the shallower or base value.
3. ``exclude_keys`` keep the model's current weights for a key and everything under it, matched on a
   dot boundary (TorchOk's plain prefix made ``layer1`` exclude ``layer10``). Excluded keys never
   count as missing, so they need no ``strict: false``.
4. ``strict`` means what it does for ``load_state_dict``: with it, every model key must be loaded
   (or excluded) and no key may be left over. Shapes must always match.

Files are read with ``torch.load(weights_only=True)`` (or safetensors): okc checkpoints (the state
dict under ``model``), Lightning ones (under ``state_dict``) and plain state dicts all work, and
so do the folders of an FSDP2 run's sharded checkpoints (read whole in this process). Load
before wrapping the model for DDP/FSDP; a run resumed from ``resume_path`` already has its weights
and should not load these over them (TorchOk did).
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from okc.config.schema import Experiment, LoadCheckpoint
from okc.engine.checkpoint import load_weights, read_checkpoint
from okc.engine.sharded import read_whole
from okc.errors import ConfigError, OkcError, at, did_you_mean

_SHOWN = 5  # keys listed in an error before "... and N more"


@attrs.frozen
class LoadedWeights:
    """What ``load_checkpoint`` did: keys loaded, kept by exclusion, and (non-strict) left out."""

    loaded: tuple[str, ...]
    excluded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]


KEY = "task.load_checkpoint"  # where the spec sits in an experiment, for errors and warnings


def merge_load_checkpoint(model: nn.Module, spec: LoadCheckpoint) -> LoadedWeights | None:
    """Merge the checkpoints of ``spec`` and load them into ``model``; None when nothing is set."""
    with at(KEY):
        return _merge(model, spec)


def _merge(model: nn.Module, spec: LoadCheckpoint) -> LoadedWeights | None:
    overrides = dict(spec.overridden_name2ckpt_path or {})
    if spec.base_ckpt_path is None and not overrides:
        if spec.exclude_keys:
            warnings.warn(f"{KEY}.exclude_keys has no effect without checkpoints", stacklevel=3)
        return None
    current = model.state_dict()
    merged: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}  # model key -> the file it came from, for error messages
    unexpected: dict[str, str] = {}  # key -> file
    if spec.base_ckpt_path is not None:
        with at("base_ckpt_path"):
            base = read_weights(spec.base_ckpt_path)
            if isinstance(base, torch.Tensor):
                raise ConfigError("", "holds a single tensor, not a state dict")
        for key, value in base.items():
            if key in current:
                merged[key] = value
                source[key] = spec.base_ckpt_path
            else:
                unexpected[key] = spec.base_ckpt_path
    for name, file in sorted(overrides.items(), key=lambda item: _depth(item[0])):
        with at(f"overridden_name2ckpt_path.{name}"):
            placed, extra = place(name, read_weights(file), current)
        merged.update(placed)
        source.update(dict.fromkeys(placed, file))
        unexpected.update(dict.fromkeys(extra, file))
    with at("exclude_keys"):
        excluded = _excluded(spec.exclude_keys, current)
    for key in excluded:
        merged.pop(key, None)
    missing = [k for k in current if k not in merged and k not in excluded]
    if spec.strict and (missing or unexpected):
        raise ConfigError("", _mismatch_message(missing, unexpected))
    _check_shapes(merged, current, source)
    model.load_state_dict(merged, strict=False)
    if missing or unexpected:
        warnings.warn(
            f"{KEY}: {_mismatch_message(missing, unexpected, strict=False)}", stacklevel=3
        )
    return LoadedWeights(tuple(merged), tuple(excluded), tuple(missing), tuple(unexpected))


def load_evaluation_weights(
    model: nn.Module, exp: Experiment, checkpoint: str | Path | None, *, stage: str
) -> None:
    """Weights for evaluation and export: ``checkpoint``, else ``resume_path``, else the
    experiment's ``task.load_checkpoint``; with none of them, warn that they are untrained."""
    source = checkpoint or exp.resume_path
    if not model.state_dict():  # a task without weights of its own (ONNXTask): nothing to load
        if source is not None:
            raise ConfigError("resume_path", f"{stage}: the task has no weights to load {source}")
        return
    if source is not None:
        load_weights(model, source)
    elif exp.task.load_checkpoint is not None:
        merge_load_checkpoint(model, exp.task.load_checkpoint)
    else:
        warnings.warn(
            f"no checkpoint given: {stage} uses freshly initialized weights "
            "(pass --checkpoint or set resume_path)",
            stacklevel=3,
        )


def read_weights(file: str | Path) -> dict[str, torch.Tensor] | torch.Tensor:
    """The state dict (or lone tensor) in ``file``; errors are ``ConfigError``\\ s at the key
    that names the file (the caller places them with ``okc.errors.at``)."""
    file = Path(file).expanduser()
    if file.is_dir():  # an FSDP2 run's sharded checkpoint
        return _sharded_weights(file)
    if not file.is_file():
        raise ConfigError("", f"no such file: '{file}'")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return _unwrap_keys(load_file(str(file)))
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = found[1] if found else "objects"
        raise ConfigError(
            "",
            f"'{file}' holds Python objects besides tensors ({what}), which okc does not "
            "unpickle (weights_only=True); if you trust the file, save only its weights once: "
            "torch.save(torch.load(file, weights_only=False)['state_dict'], 'weights.pt')",
        ) from err
    except (RuntimeError, OSError, EOFError) as err:
        raise ConfigError("", f"cannot read '{file}': {err}") from err
    if isinstance(data, torch.Tensor):
        return data
    return _unwrap_keys(_state_dict(data, file))


def place(
    name: str,
    weights: Mapping[str, torch.Tensor] | torch.Tensor,
    model: Mapping[str, Any],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Model keys under ``name`` for the file's keys (module docstring, rule 1); leftover keys."""
    name = name.strip(" .")
    targets = {k for k in model if _under(k, name)}
    if not targets:
        hint = did_you_mean(name, _modules(model))
        raise ConfigError("", f"the model has no module or tensor '{name}'{hint}")
    if isinstance(weights, torch.Tensor):
        if name not in model:
            raise ConfigError("", f"holds a single tensor, but '{name}' is a module")
        return {name: weights}, []
    prefixes = [name, *_ancestors(name)]
    placed: dict[str, torch.Tensor] = {}
    extra: list[str] = []
    for key, value in weights.items():
        candidates = [key, *(f"{p}.{key}" for p in prefixes)]
        found = next((c for c in candidates if c in targets), None)
        if found is not None:
            placed[found] = value
        elif not any(c in model for c in candidates):  # model keys outside ``name``: not asked for
            extra.append(key)
    if not placed:
        raise ConfigError(
            "",
            f"none of the file's keys ({_listed(list(weights))}) fits under '{name}' "
            f"({_listed(sorted(targets))})",
        )
    return placed, extra


# --- helpers --------------------------------------------------------------------------------------


def _sharded_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The model weights of a sharded checkpoint folder, whole, in this process."""
    try:
        if "model" not in read_checkpoint(folder).get("sharded", ()):
            raise OkcError(f"{folder}: the folder holds no sharded model")
        return _unwrap_keys(read_whole(folder))
    except OkcError as err:
        raise ConfigError("", str(err)) from err


def _state_dict(data: Any, file: Path) -> Mapping[str, torch.Tensor]:
    """okc's ``model``, Lightning's ``state_dict``, or the object itself."""
    if isinstance(data, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(data.get(key), Mapping):
                data = data[key]
                break
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        keys = _listed(list(data)) if isinstance(data, Mapping) else type(data).__name__
        raise ConfigError(
            "", f"'{file}' holds no state dict (found {keys}); expected tensors by name"
        )
    return data


# Wrapper segments that torch.compile / activation checkpointing / FSDP1 put into saved keys.
_WRAPPER_SEGMENTS = ("_orig_mod", "_checkpoint_wrapped_module", "_fsdp_wrapped_module")


def _unwrap_keys(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys as the bare model names them (no DDP ``module.``, no compile ``_orig_mod.``)."""
    keys = [".".join(p for p in k.split(".") if p not in _WRAPPER_SEGMENTS) for k in weights]
    if keys and all(k.startswith("module.") for k in keys):
        keys = [k.removeprefix("module.") for k in keys]
    return dict(zip(keys, weights.values(), strict=True))


def _under(key: str, name: str) -> bool:
    return key == name or key.startswith(name + ".")


def _depth(name: str) -> int:
    return name.strip(" .").count(".")


def _ancestors(name: str) -> list[str]:
    """``a.b.c`` → ``['a.b', 'a']``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def _modules(keys: Mapping[str, Any]) -> set[str]:
    return {a for k in keys for a in [k, *_ancestors(k)]}


def _excluded(exclude: Sequence[str], model: Mapping[str, Any]) -> list[str]:
    keys: list[str] = []
    for i, name in enumerate(exclude):
        name = name.strip(" .")
        hits = [k for k in model if _under(k, name)]
        if not hits:
            raise ConfigError(
                str(i),
                f"the model has no module or tensor '{name}'{did_you_mean(name, _modules(model))}",
            )
        keys += hits
    return keys


def _listed(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def _mismatch_message(
    missing: Sequence[str], unexpected: Mapping[str, str], *, strict: bool = True
) -> str:
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} model keys: {_listed(missing)}")
    if unexpected:
        files = ", ".join(dict.fromkeys(unexpected.values()))
        parts.append(
            f"{len(unexpected)} unexpected keys: {_listed(list(unexpected))} (from {files})"
        )
    if strict:
        return (
            "the merged checkpoint does not match the model (strict: true): "
            + "; ".join(parts)
            + ". Fix the names, exclude keys to keep their initial weights, or set strict: false"
        )
    return "not loaded: " + "; ".join(parts)


def _check_shapes(
    merged: Mapping[str, torch.Tensor],
    model: Mapping[str, torch.Tensor],
    source: Mapping[str, str],
) -> None:
    wrong = [
        f"{k} is {tuple(v.shape)} in {source.get(k, '?')} but {tuple(model[k].shape)} in the model"
        for k, v in merged.items()
        if v.shape != model[k].shape
    ]
    if wrong:
        more = f" and {len(wrong) - _SHOWN} more" if len(wrong) > _SHOWN else ""
        raise ConfigError("", "shapes differ: " + "; ".join(wrong[:_SHOWN]) + more)
