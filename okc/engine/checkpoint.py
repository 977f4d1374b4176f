"""Checkpoints: one dict, written atomically, read with ``weights_only=True``.

A full checkpoint holds everything ``resume_path`` needs to continue exactly where a run stopped:
model weights, optimizers, schedulers, loss scaler, epoch / step / batch-in-epoch, the data
pipeline's position, RNG states, callback states and the experiment as plain data. A
weights-only checkpoint holds the model and the experiment.
"""

from __future__ import annotations

import os
import random
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from okc import __version__
from okc.errors import OkcError

FORMAT = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a crash leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"okc_version": __version__, "format": FORMAT, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint_file(path: str | Path, *, what: str = "checkpoint") -> dict[str, Any]:
    """Read an okc checkpoint safely (no arbitrary unpickling), with errors naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise OkcError(f"{what} not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a truncated or foreign file
        raise OkcError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or "model" not in state:
        raise OkcError(f"{path}: not an okc checkpoint (no 'model' entry)")
    return state


def rng_state() -> dict[str, Any]:
    """Every RNG a run draws from, as plain data + tensors (weights_only-loadable)."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_state_into(
    model: torch.nn.Module,
    state: dict[str, Any],
    *,
    source: str,
    load: Callable[[torch.nn.Module, dict[str, Any]], None] | None = None,
) -> None:
    """Load a checkpoint's ``model`` entry, with a short message when it does not fit."""
    try:
        (load or _load_plain)(model, state["model"])
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()][:3]
        raise OkcError(f"{source}: the weights do not fit this model: {' '.join(lines)}") from err


def _load_plain(model: torch.nn.Module, weights: dict[str, Any]) -> None:
    model.load_state_dict(weights)


def load_model_weights(
    model: torch.nn.Module, exp: Any, checkpoint: str | Path | None, *, stage: str
) -> None:
    """Weights for evaluation/export: ``checkpoint``, else ``resume_path``, else the experiment's
    ``task.load_checkpoint``; with none of them, warn that the weights are untrained."""
    source = checkpoint or exp.resume_path
    if source is not None:
        load_state_into(model, load_checkpoint_file(source), source=str(source))
    elif exp.task.load_checkpoint is not None:
        from okc.engine.weights import load_checkpoint

        load_checkpoint(model, exp.task.load_checkpoint)
    else:
        warnings.warn(
            f"no checkpoint given: {stage} uses freshly initialized weights "
            "(pass --checkpoint or set resume_path)",
            stacklevel=3,
        )
