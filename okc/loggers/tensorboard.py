"""TensorBoard event files (the ``tensorboard`` package: ``pip install 'okc[tensorboard]'``).

What a run shows in TensorBoard (``tensorboard --logdir <log_dir>``; each run folder's
``tensorboard/`` is one TensorBoard run):

- SCALARS: every logged value (losses, metrics, ``lr-<Optimizer>``) against the optimizer step;
- TEXT: ``experiment``, the resolved experiment as YAML, and ``status`` when the run ends;
- HPARAMS: the experiment flattened (``optimization.0.optimizer.params.lr``), one session per
  run, ended with its status (FINISHED → success, FAILED → failure, KILLED → aborted), so runs
  can be compared by their settings;
- IMAGES: ``train/batch/<image key>``, a grid of the first training batch as the model receives
  it (augmented, transformed), written by the ``TrainImageGrid`` callback through
  ``write_images``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from okc.config.schema import Experiment
from okc.loggers.mlflow import flatten
from okc.loggers.packages import installed, require
from okc.registry import LOGGERS

# how each run status is recorded as an hparams session's end: TensorBoard's enum has no
# "aborted" (only unknown, success, failure, running), so an interrupted run ends as unknown; the
# text ``status`` says KILLED
SESSION_STATUS = {"FINISHED": "STATUS_SUCCESS", "FAILED": "STATUS_FAILURE",
                  "KILLED": "STATUS_UNKNOWN"}  # fmt: skip


def tensorboard_available() -> bool:
    return installed("tensorboard")


def tensorboard_dir(exp: Experiment, run_dir: Path) -> Path:
    """Where a run's TensorBoard events go: ``<run_dir>/tensorboard[/<logger.params.sub_dir>]``."""
    spec = exp.logger
    sub_dir = spec.params.get("sub_dir") if spec and spec.name == "TensorBoardLogger" else None
    return Path(run_dir) / "tensorboard" / (str(sub_dir) if sub_dir else "")


@LOGGERS.register
class TensorBoardLogger:
    """Scalars, the experiment as text and hparams to ``<run_dir>/tensorboard[/sub_dir]``.

    Lightning's parameters that mean something here: ``prefix`` (joined to every key with
    ``-``), ``sub_dir``, and SummaryWriter's ``flush_secs``, ``max_queue`` and
    ``filename_suffix``. Closing writes the text ``status`` (FINISHED, FAILED or KILLED) and ends
    the hparams session with it.
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
        require("tensorboard", what="TensorBoardLogger")
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(run_dir) / "tensorboard" / (sub_dir or "")
        self.prefix = prefix
        self.writer = SummaryWriter(
            str(self.log_dir), flush_secs=flush_secs, max_queue=max_queue,
            filename_suffix=filename_suffix,
        )  # fmt: skip
        self._hparams = bool(hyperparams)
        if hyperparams:
            text = yaml.safe_dump(dict(hyperparams), sort_keys=False)
            self.writer.add_text("experiment", f"```\n{text}```", global_step=0)
            self._start_session(hyperparams)
        self._closed = False

    def _start_session(self, hyperparams: Mapping[str, Any]) -> None:
        """The hparams plugin's session start (its metrics are the run's scalars, which the
        plugin finds itself, so no experiment summary with a fixed metric list is written)."""
        from torch.utils.tensorboard.summary import hparams

        values = {key: _typed(text) for key, text in flatten(dict(hyperparams))}
        _, start, _ = hparams(values, {})
        self.writer.file_writer.add_summary(start)

    def log(self, metrics: Mapping[str, float], *, step: int, epoch: int) -> None:
        for key, value in metrics.items():
            name = f"{self.prefix}-{key}" if self.prefix else key
            self.writer.add_scalar(name, value, global_step=step)

    def close(self, status: str = "FINISHED") -> None:
        if not self._closed:
            self.writer.add_text("status", status)
            if self._hparams:
                self.writer.file_writer.add_summary(_session_end(status))
            self.writer.close()
            self._closed = True


def _typed(text: str) -> bool | int | float | str:
    """A flattened experiment value back to its type (hparams filter numbers as numbers)."""
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _session_end(status: str) -> Any:
    """The hparams plugin's session end with the run's status."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.metadata import (
        PLUGIN_DATA_VERSION,
        PLUGIN_NAME,
        SESSION_END_INFO_TAG,
    )
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo

    end = SessionEndInfo(status=Status.Value(SESSION_STATUS.get(status, "STATUS_UNKNOWN")))
    content = HParamsPluginData(session_end_info=end, version=PLUGIN_DATA_VERSION)
    plugin = SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME,
                                        content=content.SerializeToString())  # fmt: skip
    metadata = SummaryMetadata(plugin_data=plugin)
    return Summary(value=[Summary.Value(tag=SESSION_END_INFO_TAG, metadata=metadata)])


def write_images(log_dir: Path, images: Mapping[str, Any], *, step: int) -> None:
    """Write ``{tag: (C, H, W) float image in [0, 1]}`` as TensorBoard images at ``step``.

    Its own small event file beside the logger's (``*.images``): TensorBoard reads every event
    file of a run folder as one run, and the logger's writer stays the loop's alone.
    """
    require("tensorboard", what="TensorBoard images")
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_dir), filename_suffix=".images")
    try:
        for tag, image in images.items():
            writer.add_image(tag, image, global_step=step)
    finally:
        writer.close()
