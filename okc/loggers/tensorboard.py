"""TensorBoard event files, when the ``tensorboard`` package is installed."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from okc.registry import LOGGERS


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


@LOGGERS.register
class TensorBoardLogger:
    """Scalars to ``<run_dir>/tensorboard``; view with ``tensorboard --logdir <log_dir>``."""

    def __init__(self, *, run_dir: Path, flush_secs: int = 30, **ignored: Any) -> None:
        if ignored:
            warnings.warn(
                f"TensorBoardLogger ignores {sorted(ignored)} (okc writes scalars only)",
                stacklevel=2,
            )
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), flush_secs=flush_secs)

    def log(self, metrics: Mapping[str, float], *, step: int, epoch: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)

    def close(self) -> None:
        self.writer.close()
