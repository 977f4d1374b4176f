"""Callbacks: code that runs at points of the loop (see ``okc.engine.hooks.Callback``)."""

from okc.callbacks.checkpoint_onnx import CheckpointONNX, ModelCheckpointWithOnnx
from okc.callbacks.early_stopping import EarlyStopping
from okc.callbacks.finalize import FinalizeLogger
from okc.callbacks.freeze import FreezeUnfreeze
from okc.callbacks.lr_monitor import LearningRateMonitor
from okc.callbacks.model_checkpoint import ModelCheckpoint
from okc.callbacks.progress import ProgressBar

__all__ = [
    "CheckpointONNX", "EarlyStopping", "FinalizeLogger", "FreezeUnfreeze", "LearningRateMonitor",
    "ModelCheckpoint", "ModelCheckpointWithOnnx", "ProgressBar",
]  # fmt: skip
