"""The progress display: a rich live bar in a terminal, plain lines otherwise (logs, CI).

Shows epoch, step, loss, the latest metrics, it/s and the ETA. It reads only values the loop has
already logged, so it adds no host syncs: the loss shown is the one from the last logging step.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Mapping
from typing import Any

from okc.engine.hooks import Callback, RunView
from okc.registry import CALLBACKS


def _fmt(values: Mapping[str, float], keys: list[str] | None = None) -> str:
    keys = keys if keys is not None else sorted(values)
    return "  ".join(f"{k} {values[k]:.4g}" for k in keys if k in values)


def _eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@CALLBACKS.register
@CALLBACKS.register(name="RichProgressBar")
@CALLBACKS.register(name="TQDMProgressBar")
class ProgressBar(Callback):
    """Lightning's ``RichProgressBar`` / ``TQDMProgressBar`` names map here."""

    main_process_only = True

    def __init__(self, *, refresh_rate: int = 1, leave: bool = True, **ignored: Any) -> None:
        if ignored:
            warnings.warn(f"ProgressBar ignores {sorted(ignored)}", stacklevel=2)
        self.refresh_rate = max(1, refresh_rate)
        self.leave = leave
        self.live = sys.stdout.isatty()
        self._progress: Any = None
        self._task: Any = None
        self._t0 = self._tstep = time.monotonic()
        self._step0 = 0

    # --- terminal ---------------------------------------------------------------------------------

    def _bar(self, description: str, total: int, completed: int = 0) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                transient=not self.leave,
            )  # fmt: skip
            self._progress.start()
        self._task = self._progress.add_task(description, total=total, completed=completed, info="")

    def _advance(self, completed: int, info: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed, info=info)

    def _print(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, flush=True)

    # --- hooks ------------------------------------------------------------------------------------

    def _epochs(self, run: RunView) -> str:
        n = run.max_epochs
        return f"epoch {run.epoch + 1}/{n}" if n > 0 else f"epoch {run.epoch + 1}"

    def on_train_epoch_start(self, run: RunView) -> None:
        self._t0 = self._tstep = time.monotonic()
        self._step0 = run.batch_idx
        if self.live:
            self._bar(self._epochs(run), run.num_batches, run.batch_idx)

    def on_train_batch_end(self, run: RunView, logs: Mapping[str, float] | None) -> None:
        done, total = run.batch_idx, run.num_batches
        elapsed = time.monotonic() - self._t0
        rate = (done - self._step0) / elapsed if elapsed > 0 else 0.0
        loss = run.logged.get("train/loss_step")
        info = (f"loss {loss:.4g}  " if loss is not None else "") + f"{rate:.1f} it/s"
        if self.live:
            if done % self.refresh_rate == 0 or done == total:
                self._advance(done, info)
        elif logs:
            eta = _eta((total - done) / rate) if rate else "?"
            self._print(f"{self._epochs(run)}  batch {done}/{total}  step {run.global_step}  "
                        f"{info}  ETA {eta}")  # fmt: skip

    def on_validation_start(self, run: RunView) -> None:
        if self.live:
            self._bar("validating" if run.stage == "fit" else run.stage, 0)

    def on_validation_batch_end(self, run: RunView, batch_idx: int, num_batches: int) -> None:
        if self.live and self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=num_batches, completed=batch_idx + 1)

    def on_validation_end(self, run: RunView, metrics: Mapping[str, float]) -> None:
        if self.live and self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None

    def on_epoch_end(self, run: RunView, metrics: Mapping[str, float]) -> None:
        took = time.monotonic() - self._t0
        self._print(f"{self._epochs(run)} done in {took:.1f}s  {_fmt(metrics)}")

    def teardown(self, run: RunView, stage: str) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
