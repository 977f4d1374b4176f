"""TensorBoard event files (the ``tensorboard`` package: ``pip install 'okc[tensorboard]'``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from okc.loggers.packages import installed, require
from okc.registry import LOGGERS


def tensorboard_available() -> bool:
    return installed("tensorboard")


@LOGGERS.register
class TensorBoardLogger:
    """Scalars to ``<run_dir>/tensorboard[/sub_dir]``; view with ``tensorboard --logdir <log_dir>``.

    Lightning's parameters that mean something for scalars: ``prefix`` (joined to every key with
    ``-``), ``sub_dir``, and SummaryWriter's ``flush_secs``, ``max_queue`` and
    ``filename_suffix``. The resolved experiment is written once as the text ``experiment``, and
    closing writes the text ``status`` (FINISHED, FAILED or KILLED).
    """

    def __init__(
        self,
        *,
        run_dir: Path,
        prefix: str = "",
        sub_dir: str | None = None,
        flush_secs: int = 30,
        max_queue: int = 10,
        filename_suffix: str = "",
        hyperparams: Mapping[str, Any] | None = None,
    ) -> None:
        require("tensorboard", what="TensorBoardLogger", path="logger.name")
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(run_dir) / "tensorboard" / (sub_dir or "")
        self.prefix = prefix
        self.writer = SummaryWriter(
            str(self.log_dir), flush_secs=flush_secs, max_queue=max_queue,
            filename_suffix=filename_suffix,
        )  # fmt: skip
        if hyperparams:
            text = yaml.safe_dump(dict(hyperparams), sort_keys=False)
            self.writer.add_text("experiment", f"```\n{text}```", global_step=0)
        self._closed = False

    def log(self, metrics: Mapping[str, float], *, step: int, epoch: int) -> None:
        for key, value in metrics.items():
            name = f"{self.prefix}-{key}" if self.prefix else key
            self.writer.add_scalar(name, value, global_step=step)

    def close(self, status: str = "FINISHED") -> None:
        if not self._closed:
            self.writer.add_text("status", status)
            self.writer.close()
            self._closed = True
