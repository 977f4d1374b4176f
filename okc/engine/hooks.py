"""The callback API: the points in the loop where callbacks run, and what they see of the run.

Concrete callbacks live in ``okc.callbacks`` (above the engine); the API layer hands the loop its
callbacks, so the engine imports none of them. Every hook receives a ``RunView``: the run's
position and results, read-only, plus a few actions (``save_checkpoint``, ``request_stop``,
``log``, ``set_status``). A callback never writes the loop's attributes. Callbacks with state
(best scores, patience counters) implement ``state_dict``/``load_state_dict``; the checkpointer
saves them and restores them on resume.

Order within an epoch of ``fit``::

    setup(run, "fit") → on_fit_start
      per epoch: on_train_epoch_start → per optimizer step: on_train_batch_end(logs)
                 → on_train_epoch_end → [on_validation_start → on_validation_batch_end ...
                 → on_validation_end(metrics)] → on_epoch_end(metrics)
    → on_fit_end → teardown(run, "fit")

``on_interrupt`` runs when Ctrl-C/SIGTERM stops fit at a step boundary, ``on_exception`` when
anything else ends it. validate/test/predict call ``setup``, the validation hooks and ``teardown``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from torch import nn
from torch.optim import Optimizer

if TYPE_CHECKING:
    from okc.engine.loop import Loop


class RunView:
    """What a callback sees of the run. Properties read the loop's current state; the three
    methods are the only ways a callback changes the run."""

    def __init__(self, loop: Loop) -> None:
        self._loop = loop

    # --- where the run is -------------------------------------------------------------------------

    @property
    def stage(self) -> str:
        """fit, validate, test or predict."""
        return self._loop.stage

    @property
    def epoch(self) -> int:
        """The epoch being run (from 0)."""
        return self._loop.progress.epoch

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far."""
        return self._loop.progress.global_step

    @property
    def batch_idx(self) -> int:
        """Training batches read in this epoch."""
        return self._loop.progress.batch_idx

    @property
    def num_batches(self) -> int:
        """Training batches this epoch runs."""
        return self._loop.num_train_batches

    @property
    def max_epochs(self) -> int:
        """The epoch limit (-1: none)."""
        return self._loop.limits.max_epochs

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return self._loop.elapsed()

    # --- what it has produced ---------------------------------------------------------------------

    @property
    def logged(self) -> Mapping[str, float]:
        """The latest value of every key logged so far (read-only)."""
        return MappingProxyType(self._loop.logged)

    @property
    def run_dir(self) -> Path:
        return self._loop.run_dir

    @property
    def is_main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self._loop.env.is_main

    @property
    def world_size(self) -> int:
        return self._loop.env.world_size

    # --- objects a callback may act on ------------------------------------------------------------

    @property
    def model(self) -> nn.Module:
        """The task's model (backbone, neck, pooling, head): what fine-tuning callbacks freeze."""
        return self._loop.task.model

    @property
    def task(self) -> nn.Module:
        """The task (``forward`` is what export traces; ``inputs`` its example shapes)."""
        return self._loop.task

    @property
    def optimizers(self) -> tuple[Optimizer, ...]:
        return tuple(pair.optimizer for pair in self._loop.optimizers)

    # --- actions ----------------------------------------------------------------------------------

    def save_checkpoint(self, path: str | Path, *, weights_only: bool = False) -> Path:
        """Write a checkpoint of the run as it stands (collective: every rank calls it)."""
        return self._loop.save_checkpoint(path, weights_only=weights_only)

    def request_stop(self, reason: str) -> bool:
        """End fit at the end of this epoch; ``reason`` is printed. False (and no stop) before
        ``trainer.min_epochs`` epochs have run."""
        return self._loop.request_stop(reason)

    def log(self, values: Mapping[str, float]) -> dict[str, float]:
        """Record values under the current step, as the loop's own metrics are."""
        return self._loop.log(values)

    def set_status(self, status: Literal["FINISHED", "FAILED", "KILLED"]) -> None:
        """How the run ended, for its loggers: they record it when the loop closes them, after
        ``teardown`` (MLflow's run status, the last record of metrics.jsonl). FINISHED unless a
        callback (``FinalizeLogger``) says otherwise. Only the main process has loggers."""
        if self._loop.logger is not None:
            self._loop.logger.set_status(status)


class Callback:
    """Base class; override the hooks you need. All hooks are no-ops here."""

    #: callbacks that only make sense on the main process (writing files, printing)
    main_process_only: bool = False
    #: where the callback's params are in the experiment, for error messages
    config_path: str = "callbacks"

    def setup(self, run: RunView, stage: str) -> None:
        """Before anything runs; ``stage`` is fit, validate, test or predict."""

    def on_fit_start(self, run: RunView) -> None:
        """After a resume restored the run, before the sanity validation and the first epoch."""

    def on_train_epoch_start(self, run: RunView) -> None:
        """Before the first (or, resumed mid-epoch, the next) batch of an epoch."""

    def on_train_batch_end(self, run: RunView, logs: Mapping[str, float] | None) -> None:
        """After an optimizer step (``logs`` holds step metrics on logging steps, else None)."""

    def on_train_epoch_end(self, run: RunView) -> None:
        """After the last training batch of an epoch, before its validation."""

    def on_validation_start(self, run: RunView) -> None:
        """Before an evaluation pass (fit's validation, validate, test, predict)."""

    def on_validation_batch_end(self, run: RunView, batch_idx: int, num_batches: int) -> None:
        """After evaluation batch ``batch_idx`` of ``num_batches``."""

    def on_validation_end(self, run: RunView, metrics: Mapping[str, float]) -> None:
        """After an evaluation pass, with what it logged."""

    def on_epoch_end(self, run: RunView, metrics: Mapping[str, float]) -> None:
        """After training and (if due) validation of an epoch, with everything logged for it."""

    def on_fit_end(self, run: RunView) -> None:
        """After the last epoch of a fit that ended normally (limits or a stop request)."""

    def on_interrupt(self, run: RunView) -> None:
        """Ctrl-C or SIGTERM during fit: the last chance to save where the run stands."""

    def on_exception(self, run: RunView, error: BaseException) -> None:
        """Anything else ended the stage with ``error`` (re-raised after the callbacks)."""

    def teardown(self, run: RunView, stage: str) -> None:
        """Always, last."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass
