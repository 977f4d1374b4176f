"""Checkpoints: named Stateful parts, saved and restored by one Checkpointer.

Everything a run needs to continue exactly (model, optimizers and schedulers, precision/scaler,
the training data's position and seed, every RNG, the callbacks, the loop's progress) is an object
with ``state_dict``/``load_state_dict``, registered once under a name. ``Checkpointer.save``
writes ``{name: part.state_dict()}`` atomically; ``load_for_resume`` restores every part from
the entry of the same name. Adding a part is one ``add`` call: there is no second hand-written
dict to keep in step (torchtitan's Stateful + CheckpointManager).

The file is one dict, read with ``torch.load(weights_only=True)``:
``{"format": 2, "okc_version", "experiment", "weights_only", <part name>: <part state>, ...}``.
A weights-only checkpoint holds the parts marked ``weights`` (the model and the progress).
Format 1 files (okc 0.1's flat layout) are migrated on read.

With ``sharded=True`` (FSDP2) a checkpoint is a folder instead (``okc.engine.sharded``): the parts
that shard (``ShardedStateful``: the model and the optimizers) go through
torch.distributed.checkpoint, each rank writing its own shards, and the rest goes into the
folder's ``okc.pt`` in the same layout as a file. Both forms load into any strategy.

Names say what each entry point does: ``Checkpointer.save``, ``Checkpointer.load_for_resume``,
``load_weights`` (a checkpoint's model into a model, for evaluation and export) and
``okc.engine.weights.merge_load_checkpoint`` (``task.load_checkpoint``'s merge of several files).
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from okc.engine.distributed import DistEnv
from okc.engine.sharded import META, ShardedWriter, is_complete, load_shards
from okc.engine.strategy.base import Strategy
from okc.errors import OkcError
from okc.version import __version__

FORMAT = 2


@runtime_checkable
class Stateful(Protocol):
    """A part of a checkpoint: its state as plain data and tensors, and the way back."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class ShardedStateful(Stateful, Protocol):
    """A part that a sharded checkpoint saves through torch.distributed.checkpoint: its state
    keyed by name, each rank holding its own shards; ``load_state_dict`` takes that form too."""

    def sharded_state_dict(self) -> dict[str, Any]: ...


class Checkpointer:
    """Saves and restores named Stateful parts.

    Args:
        meta: entries written beside the parts (the experiment as plain data), never restored.
        is_main: whether this process writes files. Every rank builds the state, because some
            parts' ``state_dict`` is a collective (FSDP2 gathers shards); only the main one writes.
        barrier: called after writing, so no rank reads a file before it exists.
        sharded: save folders of per-rank shards (the strategy's ``sharded_checkpoints``).
        async_save: with ``sharded``, write the shards in the background
            (``trainer.checkpoint_async``); ``close`` finishes the last one.
    """

    def __init__(
        self,
        *,
        meta: Mapping[str, Any] | None = None,
        is_main: bool = True,
        barrier: Callable[[], None] = lambda: None,
        sharded: bool = False,
        async_save: bool = False,
    ) -> None:
        self.parts: dict[str, Stateful] = {}
        self.weights: set[str] = set()
        self.meta = dict(meta or {})
        self.is_main = is_main
        self.barrier = barrier
        self.writer = (
            ShardedWriter(is_main=is_main, barrier=barrier, write_meta=write_atomic,
                          async_save=async_save)
            if sharded else None
        )  # fmt: skip

    def add(self, name: str, part: Stateful, *, weights: bool = False) -> None:
        """Register ``part`` under ``name``; ``weights`` parts go into weights-only files too."""
        assert name not in self.parts and name not in _RESERVED, f"checkpoint part {name!r} twice"
        assert isinstance(part, Stateful), f"{name}: {type(part).__name__} is not Stateful"
        self.parts[name] = part
        if weights:
            self.weights.add(name)

    def state_dict(self, *, weights_only: bool = False) -> dict[str, Any]:
        parts = {name: self.parts[name].state_dict() for name in self._names(weights_only)}
        return {**self._header(weights_only), **parts}

    def _header(self, weights_only: bool) -> dict[str, Any]:
        return {"format": FORMAT, "okc_version": __version__, "weights_only": weights_only,
                **self.meta}  # fmt: skip

    def _names(self, weights_only: bool) -> list[str]:
        return [n for n in self.parts if n in self.weights or not weights_only]

    def save(self, path: str | Path, *, weights_only: bool = False) -> Path:
        """Write every part to ``path`` atomically (main process; the others return the path);
        sharded, a folder of every rank's shards."""
        if self.writer is not None:
            return self._save_sharded(Path(path), weights_only)
        state = self.state_dict(weights_only=weights_only)
        if self.is_main:
            write_atomic(state, path)
        self.barrier()
        return Path(path)

    def _save_sharded(self, path: Path, weights_only: bool) -> Path:
        assert self.writer is not None
        names = self._names(weights_only)
        sharded = [n for n in names if isinstance(self.parts[n], ShardedStateful)]
        shards = {n: self.parts[n].sharded_state_dict() for n in sharded}  # type: ignore[attr-defined]
        rest = {n: self.parts[n].state_dict() for n in names if n not in sharded}
        return self.writer.save(path, shards, {**self._header(weights_only), **rest,
                                               "sharded": sharded})  # fmt: skip

    def close(self) -> None:
        """Finish an asynchronous save under way (every rank calls it before the group goes)."""
        if self.writer is not None:
            self.writer.wait()

    def load_for_resume(self, path: str | Path) -> dict[str, Any]:
        """Restore every part from the checkpoint at ``path`` (a file or a sharded folder, from
        any number of ranks); returns the file's contents (a folder's ``okc.pt``)."""
        state = read_checkpoint(path, what="resume_path")
        if state.get("weights_only"):
            raise OkcError(
                f"{path}: a weights-only checkpoint (save_weights_only) cannot resume a run; "
                "load its weights with task.load_checkpoint instead"
            )
        in_shards = set(state.get("sharded", ()))
        missing = [name for name in self.parts if name not in state and name not in in_shards]
        if missing:
            raise OkcError(f"{path}: cannot resume, the checkpoint has no {', '.join(missing)}")
        if in_shards:
            template = {n: _sharded_state(self.parts[n], n, path) for n in self.parts
                        if n in in_shards}  # fmt: skip
            load_shards(Path(path).expanduser(), template)
            state = {**state, **template}
        for name, part in self.parts.items():
            part.load_state_dict(state[name])
        return state


def _sharded_state(part: Stateful, name: str, path: str | Path) -> dict[str, Any]:
    """The form ``part`` loads shards into (this process's own shards, or whole tensors)."""
    if not isinstance(part, ShardedStateful):
        raise OkcError(f"{path}: '{name}' is sharded in the checkpoint but not in this run")
    return part.sharded_state_dict()


_RESERVED = {"format", "okc_version", "weights_only", "experiment", "sharded"}


# --- files ----------------------------------------------------------------------------------------


class DiskFullError(OkcError):
    """A checkpoint did not fit on its disk; the message names the folder and its free space."""

    exit_code = 1  # not a mistake in the experiment


def write_atomic(state: Mapping[str, Any], path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically: a crash leaves the old file or the new one.

    A full disk (or quota) raises ``DiskFullError`` instead of torch's zip-writer error
    (``[enforce fail at inline_container.cc] unexpected pos``), and leaves no partial file.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError | RuntimeError) and _out_of_space(err, path.parent, state):
            raise _disk_full(path, state) from err
        raise
    return path


def _out_of_space(err: OSError | RuntimeError, folder: Path, state: Mapping[str, Any]) -> bool:
    """Whether a failed write ran out of space: ENOSPC/EDQUOT (torch's writer re-raises it as
    a RuntimeError, the OSError in its context), or a writer error without an errno on a disk
    with less free space than the checkpoint needs."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        cause = cause.__cause__ or cause.__context__
    return isinstance(err, RuntimeError) and _free_bytes(folder) < _nbytes(state)


def _disk_full(path: Path, state: Mapping[str, Any]) -> DiskFullError:
    free, need = _free_bytes(path.parent), _nbytes(state)
    return DiskFullError(
        f"cannot save checkpoint {path.name}: the disk of {path.parent} is full "
        f"({free / 2**20:.1f} MiB free, the checkpoint needs about {need / 2**20:.1f} MiB); "
        "nothing partial was left and earlier checkpoints are intact. Free some space, or save "
        "elsewhere (logger.log_dir, or the ModelCheckpoint's dirpath)"
    )


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def _nbytes(state: Any) -> int:
    """The tensors' bytes in ``state`` (about the file's size)."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, Mapping):
        return sum(_nbytes(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(_nbytes(v) for v in state)
    return 0


def read_checkpoint(path: str | Path, *, what: str = "checkpoint") -> dict[str, Any]:
    """An okc checkpoint read safely (no arbitrary unpickling), in the current format.

    For a sharded folder: its ``okc.pt`` (every part but the sharded ones, which ``sharded``
    names; ``load_weights`` and ``Checkpointer.load_for_resume`` read those)."""
    path = Path(path).expanduser()
    if path.is_dir():
        if not is_complete(path):
            raise OkcError(f"{path}: not a complete sharded checkpoint (no {META} or .metadata: "
                           "its save was cut short, or it is not a checkpoint)")  # fmt: skip
        return _check_format(_load(path / META), path)
    if not path.is_file():
        raise OkcError(f"{what} not found: {path}")
    return _check_format(_load(path), path)


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint file or a complete sharded folder (``resume_path: auto``
    looks for these; a half-written folder is not one)."""
    path = Path(path)
    return path.is_file() or is_complete(path)


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a truncated or foreign file
        raise OkcError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from err


def _check_format(state: Any, path: Path) -> dict[str, Any]:
    if not isinstance(state, dict) or ("model" not in state and "model" not in
                                       state.get("sharded", ())):  # fmt: skip
        raise OkcError(f"{path}: not an okc checkpoint (no 'model' entry)")
    version = state.get("format", 1)
    if version == 1:
        return _from_format_1(state)
    if version != FORMAT:
        raise OkcError(
            f"{path}: checkpoint format {version} was written by a newer okc "
            f"({state.get('okc_version', '?')}); this okc ({__version__}) reads format {FORMAT}"
        )
    return state


def _from_format_1(old: dict[str, Any]) -> dict[str, Any]:
    """okc 0.1 wrote one flat dict; its entries map one to one onto today's parts."""
    weights_only = "optimizers" not in old
    state = {
        "format": FORMAT,
        "okc_version": old.get("okc_version"),
        "weights_only": weights_only,
        "experiment": old.get("experiment"),
        "model": old["model"],
        "progress": {
            "epoch": old.get("epoch", 0),
            "global_step": old.get("global_step", 0),
            "batch_idx": old.get("batch_idx", 0),
        },
    }
    if not weights_only:
        state.update(
            optimization={"optimizers": old["optimizers"], "schedulers": old["schedulers"]},
            precision=old["precision"],
            rng=old["rng"],
            callbacks={"states": old["callbacks"]},
            data={"seed": old["seed"], "position": old.get("data")},
        )
    return state


# --- parts every run has --------------------------------------------------------------------------


class RNGState:
    """Every RNG a run draws from (Python, NumPy, torch, CUDA), as weights_only-loadable data."""

    def state_dict(self) -> dict[str, Any]:
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

    def load_state_dict(self, state: dict[str, Any]) -> None:
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


class ModelState:
    """The model's weights, as the strategy gathers (``state_dict``: whole tensors) or shards
    (``sharded_state_dict``) them; ``load_state_dict`` takes either form."""

    def __init__(
        self, model: nn.Module, *, strategy: Strategy | None = None, source: str = "checkpoint"
    ) -> None:
        self.model = model
        self.strategy = strategy or _ONE_PROCESS
        self.source = source

    def state_dict(self) -> dict[str, Any]:
        return self.strategy.model_state(self.model)

    def sharded_state_dict(self) -> dict[str, Any]:
        return self.strategy.model_state(self.model, sharded=True)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.strategy.load_model_state(self.model, state)
        except RuntimeError as err:
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()][:3]
            raise OkcError(
                f"{self.source}: the weights do not fit this model: {' '.join(lines)}"
            ) from err


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load the model weights of the okc checkpoint at ``path`` (a file, or a sharded folder
    read straight into the whole model) into ``model``."""
    state = read_checkpoint(path)
    weights = ModelState(model, source=str(path))
    if "model" in state.get("sharded", ()):
        template = {"model": weights.sharded_state_dict()}
        load_shards(Path(path).expanduser(), template)
        state = template
    weights.load_state_dict(state["model"])


# state as one process without a sharded model holds it (ModelState without a strategy)
_ONE_PROCESS = Strategy(DistEnv(device=torch.device("cpu")))
