"""The run folder and the composite logger the loop writes to."""

from __future__ import annotations

import datetime as dt
import inspect
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

from okc.config.bind import entry_problems, make, raise_if
from okc.config.schema import Experiment, Logger
from okc.errors import ConfigError, OkcError, at
from okc.loggers.files import CSVLogger, JSONLLogger
from okc.loggers.packages import installed, missing_package
from okc.loggers.tensorboard import TensorBoardLogger, tensorboard_available
from okc.paths import logs_dir
from okc.registry import LOGGERS

MIN_FREE_BYTES = 200 * 2**20  # refuse to start a run that cannot write a few checkpoints


class MetricSink(Protocol):
    """What a logger is to okc: ``log`` values at a step, ``close`` with the run's status."""

    def log(self, metrics: Mapping[str, float], *, step: int, epoch: int) -> None: ...
    def close(self, status: str = "FINISHED") -> None: ...


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
    if spec.name == "MLFlowLoggerX" and spec.params.get("run_name"):
        name = str(spec.params["run_name"])  # TorchOk's folder for this logger
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


STATUSES = ("FINISHED", "FAILED", "KILLED")
# loggers that need an optional package (``okc check`` reports a missing one)
REQUIRES = {"TensorBoardLogger": "tensorboard", "MLFlowLogger": "mlflow", "MLFlowLoggerX": "mlflow"}


class RunLogger:
    """Fans metrics out to every sink; closes them with how the run ended.

    The status is FINISHED unless ``set_status`` (``RunView.set_status``, used by
    ``FinalizeLogger``) says FAILED or KILLED. Each sink records it its own way: a last
    ``status`` record in metrics.jsonl, the text ``status`` in TensorBoard, the MLflow run's
    status; metrics.csv only flushes. Values logged after closing are dropped.
    """

    def __init__(self, sinks: list[MetricSink]) -> None:
        self.sinks = sinks
        self.status = "FINISHED"
        self.closed = False

    def set_status(self, status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"run status must be one of {STATUSES}, got {status!r}")
        self.status = status

    def log(self, metrics: Mapping[str, float], *, step: int, epoch: int) -> None:
        if metrics and not self.closed:
            for sink in self.sinks:
                sink.log(metrics, step=step, epoch=epoch)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        errors = []
        for sink in self.sinks:  # every sink gets closed, even when one fails
            try:
                sink.close(status=self.status)
            except Exception as err:  # re-raised below, after the others closed
                errors.append(err)
        if errors:
            raise errors[0]


# What okc computes for a logger; a logger gets those its signature takes. ``experiment_name``
# may be overridden in ``logger.params`` (TorchOk: params override the computed defaults).
COMPUTED = ("run_dir", "log_dir", "experiment_name", "hyperparams")
OVERRIDABLE = ("experiment_name",)


def computed_params(exp: Experiment, run_dir: Path | None) -> dict[str, Any]:
    spec = logger_spec(exp)
    return {
        "run_dir": run_dir,
        "log_dir": str(Path(spec.log_dir).expanduser()),
        "experiment_name": spec.experiment_name or exp.name or "default",
        "hyperparams": exp.to_dict(),
    }


def supplied_names(target: Any, params: Mapping[str, Any]) -> tuple[str, ...]:
    """The computed arguments okc passes ``target`` (those it accepts, not set in params)."""
    accepted = inspect.signature(target).parameters
    return tuple(
        name
        for name in COMPUTED
        if name in accepted and not (name in OVERRIDABLE and name in params)
    )


def check_logger(spec: Logger | None) -> list[ConfigError]:
    """``okc check`` for the logger section (the name, its params, its package), relative to it."""
    if spec is None:
        return []
    errors = entry_problems(LOGGERS, spec.name, spec.params, _supplied(spec))
    package = REQUIRES.get(spec.name)
    if package and not installed(package):
        errors.append(ConfigError("name", missing_package(package, what=spec.name)))
    return errors


def _supplied(spec: Logger) -> tuple[str, ...]:
    target = LOGGERS.find(spec.name)
    return () if target is None else supplied_names(target, spec.params)


def build_run_logger(exp: Experiment, run_dir: Path) -> RunLogger:
    """CSV and JSONL always; the logger the experiment names; TensorBoard when installed."""
    sinks: list[Any] = [CSVLogger(run_dir=run_dir), JSONLLogger(run_dir=run_dir)]
    spec = exp.logger
    wanted = spec.name if spec else None
    computed = computed_params(exp, run_dir)
    try:
        if spec is not None and wanted not in ("CSVLogger", "JSONLLogger"):
            with at("logger"):
                raise_if(check_logger(spec))
                supplied = {k: computed[k] for k in _supplied(spec)}
                sinks.append(make(LOGGERS, spec.name, spec.params, **supplied))
        if wanted != "TensorBoardLogger" and tensorboard_available():
            sinks.append(TensorBoardLogger(run_dir=run_dir, hyperparams=computed["hyperparams"]))
    except BaseException:
        RunLogger(sinks).close()  # the files opened so far
        raise
    return RunLogger(sinks)
