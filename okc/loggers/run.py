"""The run folder and the composite logger the loop writes to."""

from __future__ import annotations

import datetime as dt
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

from okc.config.bind import build
from okc.config.schema import Experiment, Logger
from okc.errors import OkcError
from okc.loggers.files import CSVLogger, JSONLLogger
from okc.loggers.tensorboard import TensorBoardLogger, tensorboard_available
from okc.paths import logs_dir
from okc.registry import LOGGERS

MIN_FREE_BYTES = 200 * 2**20  # refuse to start a run that cannot write a few checkpoints


class MetricSink(Protocol):
    def log(self, metrics: Mapping[str, float], *, step: int, epoch: int) -> None: ...
    def close(self) -> None: ...


def logger_spec(exp: Experiment) -> Logger:
    """The experiment's logger section, or okc's default one."""
    if exp.logger is not None:
        return exp.logger
    root = exp.trainer.default_root_dir or str(logs_dir())
    return Logger(log_dir=root, experiment_name=exp.name or "default")


def make_run_dir(exp: Experiment, *, now: dt.datetime | None = None) -> Path:
    """Create the run folder (unique, writable, with free space) and save the experiment in it."""
    spec = logger_spec(exp)
    stamp = spec.timestamp or (now or dt.datetime.now()).strftime("%Y-%m-%d/%H-%M-%S")
    name = spec.experiment_name or exp.name or "default"
    base = Path(spec.log_dir).expanduser() / name / stamp
    run_dir, n = base, 0
    while run_dir.exists() and any(run_dir.glob("metrics.*")):
        n += 1  # two runs in the same second: never mix their logs
        run_dir = base.with_name(f"{base.name}-{n}")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "experiment.yml").write_text(
            yaml.safe_dump(exp.to_dict(), sort_keys=False), encoding="utf-8"
        )
    except OSError as err:
        raise OkcError(
            f"cannot write the run folder {run_dir}: {err.strerror or err}; "
            "set logger.log_dir (or trainer.default_root_dir) to a writable folder"
        ) from err
    free = shutil.disk_usage(run_dir).free
    if free < MIN_FREE_BYTES:
        raise OkcError(
            f"only {free / 2**20:.0f} MiB free on the disk of {run_dir}; okc needs at least "
            f"{MIN_FREE_BYTES / 2**20:.0f} MiB for logs and checkpoints"
        )
    return run_dir


class RunLogger:
    """Fans metrics out to every sink; keeps the latest value of every key."""

    def __init__(self, sinks: list[MetricSink]) -> None:
        self.sinks = sinks

    def log(self, metrics: Mapping[str, float], *, step: int, epoch: int) -> None:
        if metrics:
            for sink in self.sinks:
                sink.log(metrics, step=step, epoch=epoch)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def build_run_logger(exp: Experiment, run_dir: Path) -> RunLogger:
    sinks: list[Any] = [CSVLogger(run_dir=run_dir), JSONLLogger(run_dir=run_dir)]
    spec = exp.logger
    wanted = spec.name if spec else None
    if wanted not in (None, "CSVLogger", "JSONLLogger", "TensorBoardLogger"):
        sinks.append(
            build(LOGGERS, wanted, spec.params, name_path="logger.name",
                  params_path="logger.params", run_dir=run_dir)
        )  # fmt: skip
    if tensorboard_available():
        params = spec.params if wanted == "TensorBoardLogger" else {}
        sinks.append(TensorBoardLogger(run_dir=run_dir, **params))
    elif wanted == "TensorBoardLogger":
        warnings.warn(
            "logger.name is TensorBoardLogger but the tensorboard package is not installed; "
            "metrics go to metrics.csv and metrics.jsonl only (pip install tensorboard)",
            stacklevel=2,
        )
    return RunLogger(sinks)
