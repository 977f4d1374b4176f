"""Sharded checkpoints: one folder per checkpoint, each rank writing its own shards in parallel.

FSDP2 runs save through torch.distributed.checkpoint (DCP), so no rank ever gathers the whole
model or optimizer state (docs/distributed.md measures what that saves). A folder holds:

- ``__<rank>_0.distcp``: each rank's shards of the sharded parts (model, optimizers);
- ``.metadata``: DCP's index, written by rank 0 once every rank's shards are on disk;
- ``okc.pt``: the other parts (progress, RNG, callbacks, data position, ...) and the header
  (format, version, experiment), written last by the main process. Its presence marks the
  folder complete.

A folder is written as ``.<name>.partial`` and renamed into place only when complete (a folder
that existed is swapped out and removed), so a crash leaves the old checkpoint or the new one.
DCP reshards on load: a folder saved by 2 ranks loads into 1 rank or 4, and into a model that
is not sharded at all (evaluation, export).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from okc.errors import OkcError

META = "okc.pt"
DCP_INDEX = ".metadata"


def is_complete(path: str | Path) -> bool:
    """Whether ``path`` is a sharded checkpoint folder whose save finished."""
    path = Path(path)
    return (path / META).is_file() and (path / DCP_INDEX).is_file()


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's planner, reading non-tensor entries (param groups, scheduler states) with
    ``weights_only=True`` like every okc checkpoint; DCP's own ``load_bytes`` unpickles anything.
    The body is DefaultLoadPlanner's with that one argument changed."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        obj = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            from torch.distributed.checkpoint._traverse import set_element

            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def load_shards(path: str | Path, template: dict[str, Any]) -> None:
    """Fill ``template`` (tensors keyed as when saved, sharded as this process wants them) from
    the folder at ``path``, in place. Every rank calls it when several run."""
    try:
        with _one_process_is_intended():
            dcp.load(template, checkpoint_id=str(path), planner=SafeLoadPlanner())
    except (Exception, CheckpointException) as err:  # a BaseException wrapping each rank's
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "Missing key" in ln or "Size mismatch" in ln), "")
        raise OkcError(
            f"{path}: the sharded checkpoint does not fit this model/optimizer: "
            f"{detail or (lines[0] if lines else type(err).__name__)}"
        ) from err


def read_whole(path: str | Path, part: str = "model") -> dict[str, torch.Tensor]:
    """The whole tensors of ``part`` in the folder at ``path``, without a model to size them:
    DCP's index gives each tensor's shape and dtype (``task.load_checkpoint`` reads a folder so)."""
    index = FileSystemReader(str(path)).read_metadata().state_dict_metadata
    prefix = f"{part}."
    template = {
        key.removeprefix(prefix): torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in index.items()
        if key.startswith(prefix) and isinstance(meta, TensorStorageMetadata)
    }
    box = {part: template}
    load_shards(path, box)
    return box[part]


@attrs.define
class _Pending:
    future: Future[Any]
    partial: Path
    final: Path
    meta: dict[str, Any]


class ShardedWriter:
    """Writes sharded checkpoint folders; with ``async_save`` the shards are written in the
    background while training goes on (the state is copied to the CPU first).

    An asynchronous save completes (``okc.pt`` written, folder renamed into place) at the next
    save or at ``wait()``, which the loop calls before it ends: until then the previous folder
    of that name stays the complete one.

    Args:
        is_main: whether this process writes ``okc.pt`` and renames folders.
        barrier: waits for every rank (the folder exists before anyone writes into it).
        write_meta: writes ``okc.pt`` atomically (``okc.engine.checkpoint.write_atomic``).
        async_save: ``trainer.checkpoint_async``.
    """

    def __init__(
        self,
        *,
        is_main: bool,
        barrier: Callable[[], None],
        write_meta: Callable[[Mapping[str, Any], Path], Any],
        async_save: bool = False,
    ) -> None:
        self.is_main, self.barrier, self.write_meta = is_main, barrier, write_meta
        self.async_save = async_save
        self.pending: _Pending | None = None
        # The background writes' collectives get their own gloo group: sharing the training's
        # group from another thread would interleave the two streams of collectives.
        self._group = (
            dist.new_group(backend="gloo") if async_save and dist.is_initialized() else None
        )

    def save(self, path: str | Path, shards: dict[str, Any], meta: dict[str, Any]) -> Path:
        """Write ``shards`` (every rank its own) and ``meta`` (the main process) as a folder."""
        self.wait()
        final = Path(path)
        partial = final.parent / f".{final.name}.partial"
        if self.is_main:
            shutil.rmtree(partial, ignore_errors=True)  # what a crashed save left
            partial.mkdir(parents=True)
        self.barrier()
        if self.async_save:
            future = dcp.async_save(shards, checkpoint_id=str(partial), process_group=self._group)
            self.pending = _Pending(future, partial, final, meta)  # type: ignore[arg-type]
        else:
            with _one_process_is_intended():  # returns once .metadata is written
                dcp.save(shards, checkpoint_id=str(partial))
            self._complete(partial, final, meta)
        return final

    def wait(self) -> None:
        """Finish the asynchronous save under way, if any (every rank calls it)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.future.result()  # this rank's shards (and, on rank 0, the index) are written
            self.barrier()
            self._complete(pending.partial, pending.final, pending.meta)

    def _complete(self, partial: Path, final: Path, meta: dict[str, Any]) -> None:
        if self.is_main:
            self.write_meta(meta, partial / META)
            _swap_into_place(partial, final)
        self.barrier()


@contextlib.contextmanager
def _one_process_is_intended() -> Iterator[None]:
    """DCP warns that it assumes one process when no process group exists: okc means it
    (evaluation and export read a folder in one process)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        yield


def _swap_into_place(partial: Path, final: Path) -> None:
    """``partial`` becomes ``final``; an existing ``final`` (file or folder) is removed after.

    ``os.replace`` cannot replace a non-empty folder, so the old one is first renamed aside: a
    crash in between leaves both folders complete under their hidden names.
    """
    old = final.parent / f".{final.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.is_dir():
        os.replace(final, old)
    elif final.exists():
        final.unlink()
    os.replace(partial, final)
    shutil.rmtree(old, ignore_errors=True)
