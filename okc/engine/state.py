"""The loop's own Stateful parts: progress, optimization, training-data position, callbacks.

Each is registered with the run's ``Checkpointer`` under the name its state is saved as
(``progress``, ``optimization``, ``data``, ``callbacks``); see ``okc.engine.checkpoint``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import attrs
from torch import nn

from okc.engine.hooks import Callback
from okc.engine.strategy import Strategy
from okc.errors import OkcError


@attrs.define
class Progress:
    """Where the run is: the epoch, optimizer steps so far, batches read in this epoch.

    A checkpoint records where to *continue*: a finished epoch resumes at the start of the next.
    """

    epoch: int = 0
    global_step: int = 0
    batch_idx: int = 0
    epoch_done: bool = False  # every batch of ``epoch`` was read

    @property
    def mid_epoch(self) -> bool:
        return not self.epoch_done and self.batch_idx > 0

    def next_epoch(self) -> None:
        self.epoch += 1
        self.batch_idx = 0
        self.epoch_done = False

    def state_dict(self) -> dict[str, Any]:
        if self.epoch_done:
            return {"epoch": self.epoch + 1, "global_step": self.global_step, "batch_idx": 0}
        return {"epoch": self.epoch, "global_step": self.global_step, "batch_idx": self.batch_idx}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.batch_idx, self.epoch_done = state["batch_idx"], False


class OptimizationState:
    """Every optimizer and its scheduler. ``state_dict`` holds whole tensors (a checkpoint
    file); ``sharded_state_dict`` the strategy's shards keyed by parameter name (a sharded
    folder). ``load_state_dict`` takes either."""

    def __init__(
        self, model: nn.Module, pairs: Sequence[Any], *, strategy: Strategy, source: str = ""
    ) -> None:
        self.model = model
        self.pairs = pairs
        self.strategy = strategy
        self.source = source

    def state_dict(self) -> dict[str, Any]:
        return self._state(sharded=False)

    def sharded_state_dict(self) -> dict[str, Any]:
        return self._state(sharded=True)

    def _state(self, *, sharded: bool) -> dict[str, Any]:
        optimizer_state = self.strategy.optimizer_state
        return {
            "optimizers": [
                optimizer_state(self.model, p.optimizer, sharded=sharded) for p in self.pairs
            ],
            "schedulers": [p.scheduler.state_dict() if p.scheduler else None for p in self.pairs],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["optimizers"]
        if len(saved) != len(self.pairs):
            raise OkcError(
                f"{self.source}: saved with {len(saved)} optimizers, "
                f"the experiment has {len(self.pairs)}"
            )
        for pair, opt, sch in zip(self.pairs, saved, state["schedulers"], strict=True):
            self.strategy.load_optimizer_state(self.model, pair.optimizer, opt)
            if pair.scheduler is not None and sch is not None:
                pair.scheduler.load_state_dict(sch)


class TrainDataState:
    """The training data's seed (its shuffle order) and, mid-epoch, its position."""

    def __init__(self, pipeline: Any, progress: Progress) -> None:
        self.pipeline = pipeline
        self.progress = progress

    def state_dict(self) -> dict[str, Any]:
        position = self.pipeline.state_dict() if self.progress.mid_epoch else None
        return {"seed": self.pipeline.seed, "position": position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pipeline.seed = state["seed"]  # the data order of the run being resumed
        if state["position"] is not None:
            self.pipeline.load_state_dict(state["position"])


class CallbackStates:
    """Each callback's ``state_dict``, keyed by class name (``Name_1`` for a second one)."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = callbacks

    def _keys(self) -> list[str]:
        seen: Counter[str] = Counter()
        keys = []
        for cb in self.callbacks:
            name = type(cb).__name__
            keys.append(f"{name}_{seen[name]}" if seen[name] else name)
            seen[name] += 1
        return keys

    def state_dict(self) -> dict[str, Any]:
        return {k: cb.state_dict() for k, cb in zip(self._keys(), self.callbacks, strict=True)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "states" in state:  # format 1: a list in callback order
            for cb, cb_state in zip(self.callbacks, state["states"], strict=False):
                cb.load_state_dict(cb_state)
            return
        for key, cb in zip(self._keys(), self.callbacks, strict=True):
            if key in state:  # a callback added since the checkpoint starts fresh
                cb.load_state_dict(state[key])
