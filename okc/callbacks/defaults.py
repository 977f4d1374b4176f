"""The callbacks a stage runs: the experiment's own, plus okc's defaults.

``fit`` gets a ``ModelCheckpoint(save_last=True)`` when the experiment has none (unless
``trainer.enable_checkpointing: false``), a ``LearningRateMonitor`` (so every run's curves,
``okc plot`` and TensorBoard, show its learning rate) and, with TensorBoard installed, a
``TrainImageGrid`` (the first batch as the model sees it), every stage a ``ProgressBar`` (unless
``trainer.enable_progress_bar: false``) and a ``FinalizeLogger`` (so a crashed run is never
logged as finished); ``fast_dev_run`` saves nothing, as in Lightning.
"""

from __future__ import annotations

from pathlib import Path

from okc.callbacks.finalize import FinalizeLogger
from okc.callbacks.lr_monitor import LearningRateMonitor
from okc.callbacks.model_checkpoint import ModelCheckpoint
from okc.callbacks.progress import ProgressBar
from okc.callbacks.train_images import TrainImageGrid
from okc.config.bind import make
from okc.config.schema import Experiment
from okc.engine.hooks import Callback
from okc.errors import at
from okc.loggers.tensorboard import tensorboard_available
from okc.registry import CALLBACKS


def build_callbacks(exp: Experiment, stage: str) -> list[Callback]:
    """The experiment's callbacks plus okc's defaults, for ``stage``."""
    callbacks: list[Callback] = []
    for i, c in enumerate(exp.callbacks):
        with at(f"callbacks.{i}"):
            callbacks.append(make(CALLBACKS, c.name, c.params))
        callbacks[-1].config_path = f"callbacks.{i}.params"  # where its run-time errors point
    trainer = exp.trainer
    if trainer.fast_dev_run or trainer.enable_checkpointing is False:
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
    elif stage == "fit" and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        callbacks.append(ModelCheckpoint(save_last=True))
    if trainer.enable_progress_bar is not False and not any(
        isinstance(c, ProgressBar) for c in callbacks
    ):
        callbacks.append(ProgressBar())
    if not any(isinstance(c, FinalizeLogger) for c in callbacks):
        callbacks.append(FinalizeLogger())
    if stage != "fit":
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    else:
        if not any(isinstance(c, LearningRateMonitor) for c in callbacks):
            callbacks.append(LearningRateMonitor())
        if tensorboard_available() and not any(isinstance(c, TrainImageGrid) for c in callbacks):
            callbacks.append(TrainImageGrid())
    return callbacks


def checkpoint_paths(callbacks: list[Callback]) -> tuple[Path | None, Path | None]:
    """``(best, last)`` checkpoint paths of the first ModelCheckpoint, or Nones."""
    ckpt = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
    return (ckpt.best_model_path, ckpt.last_model_path) if ckpt else (None, None)
